"""Framework-neutral parts of vgg-frameworks: arch spec, expected shapes and counts, data, history, CLI."""
