"""Framework-neutral parts of vgg-frameworks, in layers whose imports run one way (docs/architecture.md):
``core`` (what the network is) -> ``data`` -> ``runtime`` (training, checkpoints, distributed) -> ``serving``
(exports) -> the four ``vgg_*`` backends -> ``tools`` (the CLI and everything that drives the backends)."""
