"""PyTorch serving exports: a ``torch.export`` program (``.pt2``) and ONNX through ``torch.onnx.export``
(the dynamo exporter), both with a dynamic batch axis and NCHW input."""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import os
import pickle
import re
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch

from common.serving import export_flow, formats
from common.serving.optional import require
from vgg_torch.model import LAYOUT, NAME, VGG, device, predict
from vgg_torch.weights import export_weights, import_weights

_EXTRA_FILE = formats.METADATA_FILE
#: the opset docs/export.md names, pinned rather than left to the exporter's default of the day
ONNX_OPSET = 20

#: the operators in the program of a .pt2 that :func:`export` writes, for a VGG with every layer kind (LRN,
#: 1x1 convolutions, batch norm); tests/test_untrusted_models.py checks real exports stay inside it
PT2_OPS = frozenset({
    "torch.ops.aten.add.Tensor", "torch.ops.aten.avg_pool3d.default", "torch.ops.aten.batch_norm.default",
    "torch.ops.aten.conv2d.default", "torch.ops.aten.div.Tensor", "torch.ops.aten.dropout.default",
    "torch.ops.aten.flatten.using_ints", "torch.ops.aten.linear.default", "torch.ops.aten.max_pool2d.default",
    "torch.ops.aten.mul.Tensor", "torch.ops.aten.pad.default", "torch.ops.aten.pow.Tensor_Scalar",
    "torch.ops.aten.relu_.default", "torch.ops.aten.squeeze.dim", "torch.ops.aten.sym_size.int",
    "torch.ops.aten.view.default"})
#: the kinds of argument those programs pass (no custom objects, operators, graphs or strings)
PT2_ARGUMENTS = frozenset({"as_bool", "as_expr", "as_float", "as_int", "as_ints", "as_name", "as_sym_int",
                           "as_sym_ints", "as_tensor"})
#: the archive entries export writes, below the archive's root folder: markers, the program's JSON, raw
#: tensors and their JSON configs, the example inputs (a weights-only pickle) and the extra files
_PT2_ENTRY = re.compile(r"archive_format|archive_version|byteorder|\.data/version|\.data/serialization_id"
                        r"|models/\w+\.json|data/weights/(weight_\d+|\w+_weights_config\.json)"
                        r"|data/constants/(tensor_\d+|\w+_constants_config\.json)|data/sample_inputs/\w+\.pt|extra/.+")
#: a symbolic size as the program records it, which torch's loader hands to sympy.sympify (an eval):
#: ``Symbol('s31', positive=True, integer=True)``, names like s31, integers and arithmetic only
_SYMBOL_WORDS = frozenset({"Symbol", "Integer", "positive", "integer", "True", "False"})
_SYMBOL_NAME = re.compile(r"'?[a-z]+\d+'?")
#: the pytree containers of the program's input and output specs
_TREE_TYPES = frozenset({None, "builtins.tuple", "builtins.list", "builtins.dict"})
#: the most bytes a JSON entry of the archive may unpack to (a VGG's program is well under a megabyte)
_MAX_JSON = 64 << 20


def _example(model: VGG) -> tuple[torch.Tensor, dict]:
    """A contiguous NCHW batch of two (a batch of one would be specialised) and the dynamic batch axis."""
    x = torch.zeros(2, model.in_channels, model.image_size, model.image_size)
    return x, {0: torch.export.Dim("batch")}


@contextlib.contextmanager
def _quiet():
    """Without pt2_archive's "No complete tensor found in the group" (channels-last weights are stored
    strided; harmless on CPU, and the reload is checked against the live model anyway)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "No complete tensor found", UserWarning)
        yield


def _write_native(model: VGG, path: Path, meta: dict) -> None:
    x, batch = _example(model)
    program = torch.export.export(model, (x,), dynamic_shapes=(batch,))
    with _quiet():
        torch.export.save(program, path, extra_files={_EXTRA_FILE: formats.dumps(meta)})


def _write_onnx(model: VGG, path: Path, meta: dict) -> None:
    require("onnxscript", "PyTorch's ONNX exporter")
    x, _ = _example(model)
    program = torch.onnx.export(model, (x,), input_names=[formats.INPUT], output_names=[formats.OUTPUT],
                                dynamic_shapes=({0: "batch"},), opset_version=ONNX_OPSET, verbose=False)
    program.save(str(path))


def _json_entry(archive: zipfile.ZipFile, name: str):
    """A JSON entry of the archive, refused if it would unpack beyond :data:`_MAX_JSON`."""
    if archive.getinfo(name).file_size > _MAX_JSON:
        raise formats.ModelFileError(f"{archive.filename}: {name} unpacks to more than {_MAX_JSON >> 20} MiB")
    return json.loads(archive.read(name))


def _walk(node, found: dict[str, set]) -> None:
    """Collect, anywhere in a program's JSON, the values of the keys torch's loader turns into operators or
    code: ``target`` (operators), ``expr_str`` (sympify'd sizes) and the kinds of argument (``as_*``)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("target", "expr_str"):
                found[key].add(str(value))
            elif key.startswith("as_"):
                found["as_"].add(key)
            _walk(value, found)
    elif isinstance(node, list):
        for value in node:
            _walk(value, found)


def _symbolic_safe(expr: str) -> bool:
    """Whether a recorded size is only symbols, integers and arithmetic (what sympify may safely eval):
    ASCII only (Python folds look-alike letters into names), no attribute, no name but the few a size uses,
    no power (``2**10**10`` alone would run for ever)."""
    words = re.findall(r"'[^']*'|[A-Za-z_]\w*", expr)
    return (len(expr) <= 200 and "**" not in expr and re.fullmatch(r"[A-Za-z0-9_'(),=+\-*/ ]*", expr) is not None
            and all(w in _SYMBOL_WORDS or _SYMBOL_NAME.fullmatch(w) for w in words))


def _tree_types(spec: str) -> set:
    """The container types of a serialized pytree spec (``[version, {"type", "children_spec", ...}]``)."""
    types, stack = set(), [json.loads(spec)[1]]
    while stack:
        node = stack.pop()
        types.add(node.get("type"))
        stack.extend(node.get("children_spec", []))
    return types


def _program_findings(program: dict) -> list[str]:
    """What a program's JSON holds beyond a VGG's: foreign operators or kinds of argument, Python guard
    code (torch execs it in ``.module()``, as it does code it writes from the size ranges), sizes that are
    not plain arithmetic, non-tensor inputs, custom objects, containers other than tuples, lists and dicts."""
    found: dict[str, set] = {"target": set(), "expr_str": set(), "as_": set()}
    _walk(program, found)
    graph = program.get("graph_module", {}).get("graph", {})
    specs = [s.get("signature") or {} for s in program.get("graph_module", {}).get("module_call_graph", [])]
    trees = set().union(*(_tree_types(sig[k]) for sig in specs for k in ("in_spec", "out_spec") if k in sig))
    return [*formats.foreign(found["target"], PT2_OPS, "operator"),
            *formats.foreign(found["as_"], PT2_ARGUMENTS, "argument kind"),
            *(f"guard code {code}" for code in program.get("guards_code") or []),
            *(f"symbolic size {expr}" for expr in found["expr_str"] if not _symbolic_safe(expr)),
            *(f"graph input {', '.join(i)}" for i in graph.get("inputs", []) if list(i) != ["as_tensor"]),
            *(f"custom object {name}" for name in graph.get("custom_obj_values") or {}),
            *(f"size range {name}" for name, bounds in (program.get("range_constraints") or {}).items()
              if not _SYMBOL_NAME.fullmatch(name) or any(type(bounds.get(k)) not in (int, type(None))
                                                          for k in ("min_val", "max_val"))),
            *(f"container {t}" for t in trees - _TREE_TYPES),
            *(["enum in a pytree spec"] if any("__enum__" in str(sig) for sig in specs) else [])]


def _payload_findings(config: dict, what: str) -> list[str]:
    """Pickled payloads in a weights or constants config: torch unpickles those (constants named
    ``custom_obj_*``/``opaque_obj_*`` with plain pickle, whatever the weights-only setting)."""
    return [f"pickled {what} {name}" for name, entry in config.get("config", {}).items()
            if entry.get("use_pickle") or not str(entry.get("path_name", "")).startswith(("weight_", "tensor_"))]


def findings(path: Path) -> list[str]:
    """Everything in the ``.pt2`` at ``path`` that could run code when torch loads it (entries export
    never writes, such as AOTInductor libraries or legacy pickles; pickled payloads; a program beyond a
    VGG's); [] for an export of ours."""
    with zipfile.ZipFile(path) as archive:
        entries = {name.split("/", 1)[-1]: name for name in archive.namelist() if not name.endswith("/")}
        found = [f"entry {name}" for name in entries if not _PT2_ENTRY.fullmatch(name)]
        for name, full in entries.items():
            if re.fullmatch(r"data/(weights|constants)/\w+_config\.json", name):
                found += _payload_findings(_json_entry(archive, full), name.split("/")[1].rstrip("s"))
            elif re.fullmatch(r"models/\w+\.json", name):
                found += _program_findings(_json_entry(archive, full))
    return found


@contextlib.contextmanager
def _weights_only():
    """Every ``torch.load`` inside weights-only, even where torch asks otherwise: torch.export.load loads
    the example inputs with ``weights_only=True`` and, if that fails, silently again with False;
    TORCH_FORCE_WEIGHTS_ONLY_LOAD, read by each ``torch.load`` call, overrides that second call."""
    names = ("TORCH_FORCE_WEIGHTS_ONLY_LOAD", "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")  # both set is an error
    saved = {name: os.environ.pop(name, None) for name in names}
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
    try:
        yield
    finally:
        for key, value in saved.items():
            os.environ.pop(key, None)
            if value is not None:
                os.environ[key] = value


def load_exported(path: str | Path, trust_model: bool = False) -> tuple[export_flow.Forward, dict]:
    """``(forward, metadata)`` of a ``.pt2`` written by :func:`export`: forward maps NCHW images to logits.

    A ``.pt2`` is a zip that torch.export.load partly unpickles and partly execs; unless ``trust_model``, an
    archive holding anything :func:`export` never writes (:func:`findings`) is refused before
    torch reads it, and what torch does unpickle (the example inputs) is loaded weights-only."""
    extra = {_EXTRA_FILE: ""}
    try:
        if not trust_model and (found := findings(Path(path))):
            raise formats.untrusted(path, found)
        with _quiet(), contextlib.nullcontext() if trust_model else _weights_only():
            module = torch.export.load(path, extra_files=extra).module()
    except formats.ModelFileError:
        raise
    except pickle.UnpicklingError:  # what torch unpickles (the example inputs) holds more than tensors
        raise formats.untrusted(path, ["pickled data that weights-only loading refuses"]) from None
    except Exception as exc:  # a truncated or foreign archive: zip, JSON or schema errors
        raise formats.ModelFileError(f"{path} is not a readable torch.export program "
                                     f"({formats.first_line(exc)})") from None
    meta = formats.loads(extra[_EXTRA_FILE], path)

    module.to(device())  # this process's device: its GPU after init_distributed(device="gpu")

    def forward(images: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(images, np.float32)).to(device(), non_blocking=True)
            return module(x).cpu().numpy()
    return forward, meta


def export(model: VGG, path: str | Path, format: str = "native",
           images: np.ndarray | None = None) -> export_flow.Exported:
    """Write ``model`` for serving (``format`` native: ``.pt2``; onnx: ``.onnx``), reload it and check it
    against the live model on ``images`` (NCHW; default a fixed random batch) before it appears at ``path``."""
    model = export_flow.float32_master(model, VGG, export_weights, import_weights)
    if next(model.parameters()).device.type != "cpu":  # an export is traced and checked on the CPU
        model = copy.deepcopy(model).cpu()
    model.eval()  # dropout off in the traced graph; the model stays in eval mode, as after predict
    writers = {"native": functools.partial(_write_native, model), "onnx": functools.partial(_write_onnx, model)}
    return export_flow.run(model, path, format, NAME, LAYOUT, writers, lambda p: load_exported(p)[0],
                    lambda x: predict(model, x), images)
