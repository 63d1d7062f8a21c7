"""Which XLA:CPU kernels compute the JAX VGG's convolutions and products: chosen by jaxlib version, through
``XLA_FLAGS``, before XLA starts (vgg_jax imports this module first).

jaxlib 0.12 sends float32 convolutions and products to YNNPACK by default; on the small VGG, Eigen's
convolutions with YNNPACK's products train fastest at every size measured (oneDNN's custom-call convolutions
tie at 32 and 56 and are far slower at 224; docs/results.md, "JAX's kernels by version"). jaxlib 0.7 has
neither switch: its Eigen convolutions and products stay. A user's own choice wins: when ``XLA_FLAGS``
already names one of these switches, nothing is added, and ``VGG_JAX_KERNELS`` picks a path by name.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from importlib import metadata

#: the environment variable that picks a path by name (one of :func:`paths`'s, or ``jaxlib``: add nothing)
ENV_VAR = "VGG_JAX_KERNELS"
#: the XLA flags whose presence in ``XLA_FLAGS`` means the user chose the kernels
SWITCHES = ("--xla_cpu_experimental_ynn_fusion_type", "--xla_cpu_use_onednn",
            "--xla_cpu_experimental_onednn_custom_call", "--xla_cpu_experimental_onednn_fusion_type",
            "--xla_cpu_experimental_xnn_fusion_type")
_ONEDNN = "--xla_cpu_use_onednn=true --xla_cpu_experimental_onednn_custom_call=true"
#: the XLA flag that turns off XLA:CPU's YNNPACK fusions (jaxlib 0.8 and later); a value lists those kept
NO_YNN = "--xla_cpu_experimental_ynn_fusion_type="
_YNN_DOTS = "--xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"


@dataclass(frozen=True)
class Kernels:
    """A named set of XLA flags and what it computes with."""

    name: str
    flags: str
    what: str


def version(dist: str = "jaxlib") -> tuple[int, int]:
    """The installed ``dist``'s (major, minor), without importing it."""
    major, minor, *_ = metadata.version(dist).split(".")
    return int(major), int(minor)


def paths(jaxlib: tuple[int, int]) -> dict[str, Kernels]:
    """The kernel paths this jaxlib offers, its default first (the flags exist from jaxlib 0.12 on here)."""
    if jaxlib < (0, 12):
        return {"jaxlib": Kernels("jaxlib", "", "Eigen convolutions and products (jaxlib's default)")}
    found = [Kernels("jaxlib", "", "YNNPACK convolutions and products (jaxlib's default)"),
             Kernels("ynn-dots", _YNN_DOTS, "Eigen convolutions, YNNPACK products"),
             Kernels("eigen", NO_YNN, "Eigen convolutions and products (YNNPACK off)"),
             Kernels("onednn", f"{NO_YNN} {_ONEDNN}", "oneDNN convolutions, Eigen products (YNNPACK off)"),
             Kernels("onednn-ynn-dots", f"{_YNN_DOTS} {_ONEDNN}", "oneDNN convolutions, YNNPACK products")]
    return {k.name: k for k in found}


def best(jaxlib: tuple[int, int]) -> str:
    """The path this project measured fastest for the small VGG's training step on this jaxlib."""
    return "ynn-dots" if jaxlib >= (0, 12) else "jaxlib"


def _started() -> bool:
    """Whether XLA's CPU client already exists in this process (flags set now would be ignored)."""
    bridge = sys.modules.get("jax._src.xla_bridge")
    return bool(getattr(bridge, "_backends", None))


def choose(env: os._Environ[str] | dict[str, str] = os.environ, jaxlib: tuple[int, int] | None = None,
           started: bool | None = None) -> str:
    """Set ``env``'s ``XLA_FLAGS`` for the kernel path (``VGG_JAX_KERNELS``'s, else the measured best for
    ``jaxlib``, the installed one by default) unless the user's flags already choose, and return a line
    saying which path runs and why (``started``: whether XLA already runs here, as this process says)."""
    jaxlib = jaxlib or version()
    started = _started() if started is None else started
    offered = paths(jaxlib)
    flags = env.get("XLA_FLAGS", "")
    given = flags.split()
    own = next((k for k in sorted(offered.values(), key=lambda k: -len(k.flags))  # the longest first: one
                if k.flags and all(f in given for f in k.flags.split())), None)  # path's flags hold another's
    if own is not None and env.get(ENV_VAR, own.name) == own.name:  # ours, inherited by a worker process
        return f"{own.name}: {own.what}, from XLA_FLAGS"
    if any(s in flags for s in SWITCHES):
        return f"XLA_FLAGS as set: {' '.join(f for f in flags.split() if f.startswith(SWITCHES))}"
    wanted = env.get(ENV_VAR) or best(jaxlib)
    if wanted not in offered:
        raise ValueError(f"{ENV_VAR}={wanted!r} is not allowed with jaxlib {'.'.join(map(str, jaxlib))}: "
                         f"it must be one of {', '.join(offered)}")
    chosen = offered[wanted]
    if started:
        return f"jaxlib: XLA started before vgg_jax was imported ({chosen.name} not applied)"
    if chosen.flags:
        env["XLA_FLAGS"] = f"{flags} {chosen.flags}".strip()
    why = "chosen by " + ENV_VAR if env.get(ENV_VAR) else f"measured fastest for jaxlib {jaxlib[0]}.{jaxlib[1]}"
    return f"{chosen.name}: {chosen.what}, {why}"


def ynn_convolutions(env: os._Environ[str] | dict[str, str] = os.environ) -> bool:
    """Whether XLA's YNNPACK computes the convolutions on jaxlib 0.12 or later: its default, unless
    ``XLA_FLAGS`` lists the YNNPACK fusion types without them."""
    chosen = [f for f in env.get("XLA_FLAGS", "").split() if f.startswith(NO_YNN)]
    return not chosen or "CONVOLUTION" in chosen[-1]


#: the path this process runs, chosen when vgg_jax is imported
CHOSEN = choose()


def kernels() -> str:
    """Which kernels compute the convolutions and products here, and why: a line for reports."""
    return CHOSEN


__all__ = ["ENV_VAR", "NO_YNN", "Kernels", "best", "choose", "kernels", "paths", "version", "ynn_convolutions"]
