"""MXNet serving exports: Gluon's ``HybridBlock.export`` (symbol JSON + params, reloaded with
``SymbolBlock.imports`` from Python, C++ or Scala) and ONNX through ``mxnet.onnx.export_model``, both NCHW.

mx2onnx was written against onnx < 1.19 and MXNet is archived, so it will not be fixed upstream; the three
adjustments it needs with today's onnx live in :func:`_mx2onnx_compatible` and :func:`_write_onnx`.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import sys
import types
import warnings
from pathlib import Path
from unittest import mock

import numpy as np

from common.core import atomic
from common.serving import export_flow, formats, signing
from common.serving.optional import require
from vgg_mxnet.framework import gluon, mx
from vgg_mxnet.model import LAYOUT, NAME, VGG, predict
from vgg_mxnet.weights import export_weights, import_weights

_PREFIX = "model"
_SYMBOL, _PARAMS = f"{_PREFIX}-symbol.json", f"{_PREFIX}-0000.params"
_INPUT = "data"  # Gluon's name for a HybridBlock's input
#: the newest opset mx2onnx has translations for, and the IR version that goes with ONNX Runtime
ONNX_OPSET, ONNX_IR = 13, 8
#: the operators in the symbol JSON of an export of a VGG with every layer kind (LRN, 1x1 convolutions,
#: batch norm; "null" is an input or weight): MXNet runs whatever operator a symbol names, some of which
#: read files (``_cvimread``) or call Python (``Custom``); tests/test_untrusted_models.py checks real
#: exports stay inside these
SYMBOL_OPS = frozenset({"Activation", "BatchNorm", "Convolution", "Dropout", "Flatten", "FullyConnected", "LRN",
                        "Pooling", "null"})


def _write_native(model: VGG, path: Path, meta: dict) -> None:
    if not model._active:  # export needs the cached graph of a hybridized block that has run once
        model.hybridize()
    s = model.image_size
    model(mx.np.zeros((1, model.in_channels, s, s)))
    path.mkdir()
    model.export(str(path / _PREFIX), epoch=0)
    atomic.write_text(path / formats.METADATA_FILE, formats.dumps(meta))


@contextlib.contextmanager
def _mx2onnx_compatible(onnx):
    """mx2onnx 1.9.1 under onnx >= 1.19: (1) it imports ``onnx.mapping``, which onnx 1.19 removed (the
    failure surfaces as "Onnx and protobuf need to be installed"), so a stand-in module gives it the two
    tables it reads; (2) it stamps the installed onnx's newest opset (28 in onnx 1.23, beyond ONNX
    Runtime's 26) on a graph it translated for opset 13, so it is told 13."""
    mapping = types.ModuleType("onnx.mapping")
    mapping.TENSOR_TYPE_TO_NP_TYPE = {t: onnx.helper.tensor_dtype_to_np_dtype(t)
                                      for t in onnx.TensorProto.DataType.values() if t not in (0, 8)}
    mapping.NP_TYPE_TO_TENSOR_TYPE = {v: k for k, v in mapping.TENSOR_TYPE_TO_NP_TYPE.items()}
    mapping = getattr(onnx, "mapping", mapping)
    with mock.patch.dict(sys.modules, {"onnx.mapping": mapping}), \
            mock.patch.object(onnx, "mapping", mapping, create=True), \
            mock.patch.object(onnx.defs, "onnx_opset_version", lambda: ONNX_OPSET):
        yield


def _write_onnx(model: VGG, path: Path, meta: dict) -> None:
    onnx = require("onnx", "MXNet's ONNX export")
    native = path.with_name(path.name + ".native")
    _write_native(model, native, meta)
    c, s = model.in_channels, model.image_size
    with _mx2onnx_compatible(onnx):
        from mxnet import onnx as mx2onnx
        mx2onnx.export_model(str(native / _SYMBOL), str(native / _PARAMS), in_shapes=[(1, c, s, s)],
                             in_types=[np.float32], onnx_file_path=str(path), dynamic=True,
                             dynamic_input_shapes=[(None, c, s, s)], verbose=False)
    # (3) onnx.helper.make_model stamps the installed onnx's IR version (14 in onnx 1.23); ONNX Runtime
    # reads up to 13, and opset 13 needs only 8.
    written = onnx.load(str(path))
    written.ir_version = ONNX_IR
    onnx.save(written, str(path))


def symbol_ops(path: str | Path) -> set[str]:
    """Every operator the symbol JSON at ``path`` names, nested subgraphs included (a JSON parse only)."""
    ops, graphs = set(), [json.loads(Path(path).read_text())]
    while graphs:
        for node in graphs.pop()["nodes"]:
            ops.add(str(node["op"]))
            graphs += node.get("subgraphs", [])
    return ops


def findings(path: Path) -> list[str]:
    """The operators of the export folder at ``path`` that no export of a VGG has."""
    return formats.foreign(symbol_ops(path / _SYMBOL), SYMBOL_OPS)


def _shapes(symbol, data: tuple[int, ...]) -> tuple[dict[str, tuple], list[tuple[int, str]]]:
    """MXNet's own shape inference on ``symbol`` for the input shape ``data``, nothing allocated: ``(its
    parameters' shapes as the .params file names them, (bytes, name) of every operator's output)``."""
    internals = symbol.get_internals()
    args, outputs, aux = internals.infer_shape(**{_INPUT: data})
    if outputs is None:  # MXNet warns and gives up on a graph whose shapes the input leaves open
        raise ValueError(f"its graph's shapes do not follow from its input shape {data}")
    _, types, _ = internals.infer_type(**{_INPUT: "float32"})
    params = {f"arg:{name}": shape for name, shape in zip(internals.list_arguments(), args) if name != _INPUT}
    params |= {f"aux:{name}": shape for name, shape in zip(internals.list_auxiliary_states(), aux)}
    inputs = {*internals.list_arguments(), *internals.list_auxiliary_states()}
    sizes = [(math.prod(shape) * np.dtype(kind).itemsize, name)
             for name, shape, kind in zip(internals.list_outputs(), outputs, types) if name not in inputs]
    return params, sizes


def _misfit(params: dict[str, tuple], path: Path) -> str | None:
    """How the arrays of the .params file at ``path`` differ from ``params`` (name -> shape; float32), or None."""
    loaded = {name: (tuple(array.shape), np.dtype(array.dtype)) for name, array in mx.nd.load(str(path)).items()}
    wanted = {name: (tuple(shape), np.dtype(np.float32)) for name, shape in params.items()}
    for name in sorted(wanted.keys() | loaded.keys()):
        if loaded.get(name) != wanted.get(name):
            return f"{name} is {_shown(loaded.get(name))} where its graph has {_shown(wanted.get(name))}"
    return None


def _shown(entry: tuple | None) -> str:
    return "none" if entry is None else f"{entry[0]} {entry[1]}"


def check(path: Path, meta: dict) -> None:
    """Refuse (ModelFileError, one line) an export whose symbol names an operator no export of a VGG has, asks
    for an operator output beyond MAX_TENSOR_BYTES for one image of its metadata's input shape (inferred
    before any parameter is read), or whose parameters do not have the shapes its graph gives them."""
    if found := findings(path):
        raise formats.untrusted(path, found)
    params, sizes = _shapes(mx.sym.load(str(path / _SYMBOL)), (1, *meta["input_shape"][1:]))
    size, name = max(sizes, default=(0, ""), key=lambda entry: entry[0])  # the first of the largest
    formats.check_tensor_size(path, name, size)
    if misfit := _misfit(params, path / _PARAMS):
        raise formats.ModelFileError(f"{path}: its parameters do not fit its graph: {formats.printable(misfit, 200)}")


def load_exported(path: str | Path, trust_model: bool = False) -> tuple[export_flow.Forward, dict]:
    """``(forward, metadata)`` of a ``.mxnet`` folder written by :func:`export`: NCHW images to logits.

    Unless ``trust_model``, a symbol naming an operator outside :data:`SYMBOL_OPS`, asking for more memory
    than a VGG or not fitting its parameters is refused (:func:`check`) before MXNet builds it."""
    path = Path(path)
    if not trust_model:
        signing.require_signed(path)
    if not all((path / name).is_file() for name in (_SYMBOL, _PARAMS, formats.METADATA_FILE)):
        raise formats.ModelFileError(f"{path} is not an MXNet export written by vgg export "
                                     f"(needs {_SYMBOL}, {_PARAMS} and {formats.METADATA_FILE})")
    meta = formats.loads((path / formats.METADATA_FILE).read_text(), path)
    try:
        if not trust_model:
            check(path, meta)
        with warnings.catch_warnings():  # "Cannot decide type ... data: None": the input's type comes at call
            warnings.filterwarnings("ignore", "Cannot decide type", UserWarning)
            block = gluon.SymbolBlock.imports(str(path / _SYMBOL), [_INPUT], str(path / _PARAMS))
    except formats.ModelFileError:
        raise
    except Exception as exc:  # a foreign JSON; MXNetError on a truncated or foreign file
        raise formats.ModelFileError(f"{path} is not a readable MXNet export ({formats.first_line(exc)})") from None
    return lambda images: block(mx.np.array(images, dtype=np.float32)).asnumpy(), meta


def export(model: VGG, path: str | Path, format: str = "native",
           images: np.ndarray | None = None) -> export_flow.Exported:
    """Write ``model`` for serving (``format`` native: a ``.mxnet`` folder of symbol and params; onnx:
    ``.onnx``), reload it and check it against the live model on ``images`` (NCHW; default a fixed
    random batch) before it appears at ``path``."""
    model = export_flow.float32_master(model, VGG, export_weights, import_weights)
    writers = {"native": functools.partial(_write_native, model), "onnx": functools.partial(_write_onnx, model)}
    return export_flow.run(model, path, format, NAME, LAYOUT, writers, lambda p: load_exported(p)[0],
                    lambda x: predict(model, x), images)
