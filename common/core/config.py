"""One model config: the frozen ``VGG(...)`` arguments every backend's model carries as ``model.config``,
that model files, checkpoints and exports record, and that builds the same model again."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from common.core.precision import check as check_precision
from common.core.arch import HIDDEN, Arch, check_model_args


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

    def __post_init__(self) -> None:
        blocks = check_model_args(self.arch, self.num_classes, self.in_channels, self.image_size, self.dropout,
                                  self.batch_norm, self.hidden)
        check_precision(self.precision)
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
        (so an old file keeps loading); an unknown field is refused rather than dropped."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown or "arch" not in data:
            what = f"unknown field(s) {', '.join(unknown)}" if unknown else "no arch"
            raise ConfigError(f"{source}: its model config has {what}; known fields: {', '.join(sorted(known))}")
        return cls(**{**data, "arch": tuple(tuple(b) for b in data["arch"])})

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments for a backend's ``VGG(...)``."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


class Configured:
    """A model that carries ``config``, with the config's fields as read-only attributes (``model.arch``,
    ``model.image_size``, ...): mixed into every backend's ``VGG``, so a new field needs no code here."""

    config: ModelConfig


for _field in fields(ModelConfig):
    setattr(Configured, _field.name, property(lambda self, _name=_field.name: getattr(self.config, _name),
                                              doc=f"``config.{_field.name}``"))
