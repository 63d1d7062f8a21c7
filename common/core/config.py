"""One model config: the frozen ``VGG(...)`` arguments every backend's model carries as ``model.config``,
that model files, checkpoints and exports record, and that builds the same model again."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from common.core.arch import HIDDEN, Arch, check_model_args
from common.core.precision import check as check_precision
from common.core.summary import parameter_count

#: the largest image side the tools accept (twice the paper's largest test scale, 512): a resize costs
#: size x side per axis, and a model's first dense layer grows with size squared
MAX_IMAGE_SIZE = 1024
#: seeds run from 0 to this in all four frameworks (Keras's set_random_seed refuses 2**32)
MAX_SEED = 2**32 - 1
#: the most a config read from a file may ask for besides MAX_IMAGE_SIZE (far above any VGG, far below what
#: exhausts a machine), so that a forged file is refused before anything is built: hidden width, classes,
#: input channels, convolutions per block, channels per convolution, and parameters in all
MAX_HIDDEN = 65536
MAX_CLASSES = 100_000
MAX_IN_CHANNELS = 64
MAX_CONVS = 16
MAX_CHANNELS = 8192
MAX_PARAMETERS = 1_000_000_000
#: the most bytes one tensor of a loaded graph may hold for one image (a batch axis counted as 1): a VGG at
#: MAX_IMAGE_SIZE with 64 channels holds 256 MiB; a padding or broadcast bomb asks for tens of GB
MAX_TENSOR_BYTES = 1 << 30
#: bytes of one float32 weight: every model file holds its parameters as float32
WEIGHT_BYTES = 4
#: how a model's weights start, biases at zero either way: "xavier" is Glorot-uniform everywhere (the book's
#: init); "torchvision" is torchvision's VGG init: He-normal convolutions (fan-out, ReLU gain), N(0, 0.01) dense
INITS = ("xavier", "torchvision")


class ConfigError(ValueError):
    """A recorded config this project cannot build a model from."""


@dataclass(frozen=True)
class ModelConfig:
    """What defines a VGG model in every backend: its arch and options, validated once here. The fields'
    order is ``VGG(...)``'s positional order, so ``VGG(arch, 10, 1, 224)`` keeps working. Every backend builds
    the blocks of ``arch``, flatten, then Dense(hidden)-ReLU-Dropout-Dense(hidden)-ReLU-Dropout-Dense, with
    batch norms starting at scale 1, shift 0 and running statistics (0, 1)."""

    arch: Arch
    num_classes: int = 10
    in_channels: int = 1
    image_size: int = 224
    dropout: float = 0.5
    seed: int = 0  # the weights' initialisation; with dropout=0 a model is a function of this config alone
    batch_norm: bool = False
    hidden: int = HIDDEN  # the width of the classifier's two hidden dense layers
    precision: str = "fp32"  # how it computes (common.core.precision); its weights stay float32 in every file
    init: str = "xavier"  # how its weights start (INITS), drawn from seed

    def __post_init__(self) -> None:
        blocks = check_model_args(self.arch, self.num_classes, self.in_channels, self.image_size, self.dropout,
                                  self.batch_norm, self.hidden)
        check_precision(self.precision)
        if self.init not in INITS:
            raise ValueError(f"init {self.init!r}: choose one of {', '.join(INITS)}")
        object.__setattr__(self, "arch", blocks)

    @classmethod
    def of(cls, arch: Arch | ModelConfig, *args: Any, **options: Any) -> ModelConfig:
        """A config from ``VGG(...)``'s arguments, or ``arch`` itself when it already is one (with
        ``options`` replacing its fields)."""
        if isinstance(arch, ModelConfig):
            if args:
                raise TypeError("a ModelConfig takes no further positional arguments; name the fields to change")
            return replace(arch, **options) if options else arch
        return cls(arch, *args, **options)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (the arch as lists all the way down), as files record them."""
        out = asdict(self)
        out["arch"] = [[*b[:2], list(b[2])] if len(b) == 3 else list(b) for b in self.arch]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "the file") -> ModelConfig:
        """Inverse of :meth:`to_dict`. A field a file written before it existed leaves out takes its default
        (so an old file keeps loading); an unknown field is refused rather than dropped, and so is a config
        beyond the ``MAX_*`` bounds (:func:`check_bounds`)."""
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: its model config is {type(data).__name__}, not a mapping of fields")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown or "arch" not in data:
            what = f"unknown field(s) {', '.join(unknown)}" if unknown else "no arch"
            raise ConfigError(f"{source}: its model config has {what}; known fields: {', '.join(sorted(known))}")
        _check_block_sizes(data["arch"], source)
        try:
            config = cls(**{**data, "arch": tuple(tuple(b) if isinstance(b, list) else b for b in data["arch"])})
        except (TypeError, ValueError) as exc:  # ArchError and PrecisionError are ValueErrors
            raise ConfigError(f"{source}: its model config cannot make a VGG ({exc})") from None
        return check_bounds(config, source)

    @classmethod
    def from_file(cls, data: dict[str, Any], path: str | Path) -> ModelConfig:
        """:meth:`from_dict` for the config inside the model file ``path``, refused (ConfigError) when the
        file is too small to hold the float32 parameters the config asks for: checked before it is built."""
        config = cls.from_dict(data, str(path))
        need = config.parameter_count() * WEIGHT_BYTES
        have = Path(path).stat().st_size
        if need > have:
            raise ConfigError(f"{path}: its config asks for {config.parameter_count():,} parameters "
                              f"({need:,} bytes of float32), more than the file's {have:,} bytes hold")
        return config

    def parameter_count(self) -> int:
        """How many parameters a model of this config has (computed, nothing built)."""
        return parameter_count(self.arch, self.in_channels, self.image_size, self.num_classes, self.batch_norm,
                               self.hidden)

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments for a backend's ``VGG(...)``."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _refuse_beyond(sizes: list[tuple[str, Any, int]], source: str) -> None:
    """A ConfigError naming the first ``(name, value, bound)`` whose integer value is beyond its bound."""
    for name, value, bound in sizes:
        if isinstance(value, int) and value > bound:
            raise ConfigError(f"{source}: its model config asks for {name} {value:,}, beyond this project's "
                              f"bound of {bound:,}")


def _check_block_sizes(arch: Any, source: str) -> None:
    """Refuse a recorded arch's oversized blocks before validation expands them (a block of 10**9
    convolutions would be a tuple of 10**9 kernel sizes)."""
    blocks = [b for b in arch if isinstance(b, list) and len(b) >= 2] if isinstance(arch, list) else []
    _refuse_beyond([(f"block {i}'s {what}", b[k], bound) for i, b in enumerate(blocks)
                    for what, k, bound in (("convolutions", 0, MAX_CONVS), ("channels", 1, MAX_CHANNELS))], source)


def check_bounds(config: ModelConfig, source: str = "the file") -> ModelConfig:
    """``config`` if every size is within the ``MAX_*`` bounds, else a ConfigError naming the first beyond."""
    _check_block_sizes([list(b) for b in config.arch], source)
    _refuse_beyond([("image_size", config.image_size, MAX_IMAGE_SIZE), ("hidden", config.hidden, MAX_HIDDEN),
                    ("num_classes", config.num_classes, MAX_CLASSES),
                    ("in_channels", config.in_channels, MAX_IN_CHANNELS)], source)
    count = config.parameter_count()
    if count > MAX_PARAMETERS:
        raise ConfigError(f"{source}: its model config asks for {count:,} parameters, beyond this project's "
                          f"bound of {MAX_PARAMETERS:,}")
    return config


class Configured:
    """A model that carries ``config``, with the config's fields as read-only attributes (``model.arch``,
    ``model.image_size``, ...): mixed into every backend's ``VGG``. The properties are made from the fields
    below; the annotations are for type checkers (tests/test_config_fields.py holds them to the fields)."""

    config: ModelConfig
    arch: Arch
    num_classes: int
    in_channels: int
    image_size: int
    dropout: float
    seed: int
    batch_norm: bool
    hidden: int
    precision: str
    init: str


def _field_property(name: str) -> property:
    return property(lambda self: getattr(self.config, name), doc=f"``config.{name}``")


for _field in fields(ModelConfig):
    setattr(Configured, _field.name, _field_property(_field.name))
