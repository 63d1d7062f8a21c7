"""PyTorch serving exports: a ``torch.export`` program (``.pt2``) and ONNX through ``torch.onnx.export``
(the dynamo exporter), both with a dynamic batch axis and NCHW input."""

from __future__ import annotations

import ast
import collections
import contextlib
import copy
import functools
import json
import math
import operator
import os
import pickle
import re
import unicodedata
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch._export.serde.serialize import _SERIALIZE_TO_TORCH_DTYPE

from common.core.config import MAX_TENSOR_BYTES
from common.serving import export_flow, formats, signing
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
#: bytes of one element of each dtype code a program's JSON records; an unknown code counts as the widest
_ELEMENT_BYTES = {int(code): dtype.itemsize for code, dtype in _SERIALIZE_TO_TORCH_DTYPE.items()}
_WIDEST = max(_ELEMENT_BYTES.values())
#: the arithmetic a symbolic size may hold (:func:`_symbolic_safe`), as torch's sympy reads it
_ARITHMETIC = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.floordiv}


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
    assert program is not None  # the dynamo exporter's program (only the legacy exporter returns None)
    program.save(str(path))


def _json_record(reader: torch._C.PyTorchFileReader, path: Path, name: str):
    """A JSON record of the archive as torch reads it, refused if it would unpack beyond :data:`_MAX_JSON`."""
    if reader.get_record_size(name) > _MAX_JSON:
        raise formats.ModelFileError(f"{path}: {name} unpacks to more than {_MAX_JSON >> 20} MiB")
    return json.loads(reader.get_record(name))


def _folded(name: str) -> str:
    """An entry name as a lenient zip reader may match it: cut at a NUL, case and look-alikes folded."""
    return unicodedata.normalize("NFKC", name.split("\0")[0]).casefold()


def _name_problem(name: str, root: str, folded: collections.Counter) -> str | None:
    """Why a stored entry name could name different bytes to different zip readers (Python's zipfile cuts it
    at a NUL, torch's miniz does not and matches names ignoring case), or escape the archive's folder."""
    parts = name.split("/")
    if formats.printable(name) != name:
        return "a control character"
    if "\\" in name:
        return "a backslash"
    if len(parts) < 2 or parts[0] != root:
        return f"a folder other than {root}"
    if {"", ".", ".."} & set(parts):
        return "an empty, . or .. part"
    return "a duplicate" if folded[_folded(name)] > 1 else None


def _name_findings(names: list[str]) -> list[str]:
    """The entry names, as stored, that some zip reader could resolve to other bytes than another
    (:func:`_name_problem`); torch takes the archive's folder from the first."""
    root, folded = names[0].split("/")[0] if names else "", collections.Counter(map(_folded, names))
    return [f"entry {formats.printable(name)} with {problem}" for name in names
            if (problem := _name_problem(name, root, folded))]


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


def _evaluate(node: ast.AST, symbols: dict[str, int]) -> int:
    """The value of a parsed symbolic size with each symbol at ``symbols`` (1 where absent), never eval'd."""
    match node:
        case ast.Constant(value=int(value)):
            return value
        case ast.Name(id=name) | ast.Call(func=ast.Name(id="Symbol"), args=[ast.Constant(value=str(name)), *_]):
            return symbols.get(name, 1)
        case ast.Call(func=ast.Name(id="Integer"), args=[argument]):
            return _evaluate(argument, symbols)
        case ast.UnaryOp(op=ast.USub(), operand=operand):
            return -_evaluate(operand, symbols)
        case ast.BinOp(left=left, op=op, right=right) if type(op) in _ARITHMETIC:
            return _ARITHMETIC[type(op)](_evaluate(left, symbols), _evaluate(right, symbols))
    raise ValueError(f"a symbolic size holds {type(node).__name__}")


def _size(value, symbols: dict[str, int], named: dict) -> int:
    """One recorded size: an int (bare or ``as_int``), a symbolic expression, or the name of a symbolic int of
    the graph (``named``); an unsafe expression (which :func:`_symbolic_safe` reports) counts as 1."""
    value = value if isinstance(value, dict) else {"as_int": value}
    if "as_name" in value:
        value = named.get(value["as_name"]) or {}
    if "as_expr" in value:
        expr = str(value["as_expr"].get("expr_str"))
        return _evaluate(ast.parse(expr, mode="eval").body, symbols) if _symbolic_safe(expr) else 1
    number = value.get("as_int", 1)
    return int(number) if type(number) in (int, float) else 1


def _sizer(program: dict) -> Callable[[object], int]:
    """:func:`_size` for the program's recorded sizes, each symbol at its least value and at least 1 (the
    sizes for a batch of one image)."""
    symbols = {name: max(least, 1) if type(least := bounds.get("min_val")) is int else 1
               for name, bounds in (program.get("range_constraints") or {}).items() if isinstance(bounds, dict)}
    named = program.get("graph_module", {}).get("graph", {}).get("sym_int_values") or {}
    return functools.partial(_size, symbols=symbols, named=named)


def _bytes(sizes: list[int], dtype) -> int:
    """Bytes of a tensor of ``sizes`` and dtype code ``dtype``; a negative size counts as 0, and one beyond
    :data:`MAX_TENSOR_BYTES` as just beyond it (so that the product of a hostile list stays small)."""
    return math.prod(min(max(s, 0), MAX_TENSOR_BYTES + 1) for s in sizes) * _ELEMENT_BYTES.get(dtype, _WIDEST)


def _meta_bytes(meta: dict, size: Callable[[object], int]) -> int:
    """Bytes of a tensor a program or payload config describes (``sizes`` and ``dtype``)."""
    return _bytes([size(s) for s in meta.get("sizes", [])], meta.get("dtype"))


def _too_big(what: str, size: int) -> str:
    """A finding naming a tensor and its size in GB."""
    return f"{what} of {min(size, 10 ** 300) / 1e9:.3g} GB"


def _argument_bytes(node: dict, tensors: dict, size: Callable[[object], int]) -> int:
    """Bytes of what a pad or view node's integer arguments make, whatever its output declares: its declared
    input padded, or the view's sizes (``-1`` counted as 1); 0 for other nodes."""
    args = {a.get("name"): a.get("arg") or {} for a in node.get("inputs", [])}
    source = tensors.get(args.get("self", {}).get("as_tensor", {}).get("name"), {})
    key = {"torch.ops.aten.pad.default": "pad", "torch.ops.aten.view.default": "size"}.get(node.get("target", ""))
    if key is None:
        return 0
    ints = [size(v) for v in args.get(key, {}).get("as_ints") or args.get(key, {}).get("as_sym_ints") or []]
    if key == "size":
        return _bytes([abs(i) for i in ints], source.get("dtype"))
    declared = [size(s) for s in source.get("sizes", [])]
    sizes = [1] * (len(ints) // 2 - len(declared)) + declared
    for i, (before, after) in enumerate(zip(ints[::2], ints[1::2])):
        sizes[-1 - i] += before + after
    return _bytes(sizes, source.get("dtype"))


def _size_findings(program: dict) -> list[str]:
    """The tensors of a program beyond :data:`MAX_TENSOR_BYTES` for one image: those its graph declares, and
    those its pads and views make (torch runs their arguments, whatever the declared sizes say)."""
    graph, size = program.get("graph_module", {}).get("graph", {}), _sizer(program)
    tensors = graph.get("tensor_values") or {}
    made = {name: _meta_bytes(meta, size) for name, meta in tensors.items()}
    for node in graph.get("nodes", []):
        name = str(node.get("name"))
        made[name] = max(made.get(name, 0), _argument_bytes(node, tensors, size))
    return [_too_big(f"tensor {name}", n) for name, n in made.items() if n > MAX_TENSOR_BYTES]


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
    ``custom_obj_*``/``opaque_obj_*`` with plain pickle, whatever the weights-only setting); and tensors
    beyond :data:`MAX_TENSOR_BYTES` (torch makes one of zeros where the record is empty)."""
    entries, size = config.get("config", {}).items(), functools.partial(_size, symbols={}, named={})
    return [*(f"pickled {what} {name}" for name, entry in entries
              if entry.get("use_pickle") or not str(entry.get("path_name", "")).startswith(("weight_", "tensor_"))),
            *(_too_big(f"{what} {name}", n) for name, entry in entries
              if (n := _meta_bytes(entry.get("tensor_meta") or {}, size)) > MAX_TENSOR_BYTES)]


def findings(path: Path) -> list[str]:
    """Everything in the ``.pt2`` at ``path`` that could run code when torch loads it (entry names zip
    readers may resolve differently; entries export never writes, such as AOTInductor libraries or legacy
    pickles; pickled payloads; a program beyond a VGG's) or take the machine's memory (an entry inflating
    beyond the archive, a tensor beyond :data:`MAX_TENSOR_BYTES` for one image); [] for an export of ours.
    The JSON is read through torch's own zip reader, so what is checked is what torch.export.load reads."""
    with zipfile.ZipFile(path) as archive:
        names = [info.orig_filename for info in archive.infolist()]  # as stored: zipfile cuts .filename at a NUL
    if found := _name_findings(names):
        return found
    reader = torch._C.PyTorchFileReader(str(path))
    records, archive_bytes = reader.get_all_records(), Path(path).stat().st_size
    if sorted(records) != sorted(name.split("/", 1)[1] for name in names):
        return ["entries that zipfile and torch's zip reader list differently"]
    found = [f"entry {name}" for name in records if not _PT2_ENTRY.fullmatch(name)]
    found += [f"entry {name} inflating beyond the archive" for name in records
              if reader.get_record_size(name) > archive_bytes]
    for name in records:
        if re.fullmatch(r"data/(weights|constants)/\w+_config\.json", name):
            found += _payload_findings(_json_record(reader, path, name), name.split("/")[1].rstrip("s"))
        elif re.fullmatch(r"models/\w+\.json", name):
            program = _json_record(reader, path, name)
            found += _program_findings(program) + _size_findings(program)
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


def _made_findings(module: torch.fx.GraphModule, meta: dict) -> list[str]:
    """The tensors beyond :data:`MAX_TENSOR_BYTES` that ``module`` makes from one image of the metadata's
    input shape, found on fake tensors (nothing allocated, nothing computed): the sizes a program's JSON
    declares, which :func:`findings` bounds, need not be those its operators make."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.passes.fake_tensor_prop import FakeTensorProp
    mode, failure = FakeTensorMode(allow_non_fake_inputs=True), None
    with mode:
        image = torch.empty(1, *meta["input_shape"][1:])
    for node in module.graph.nodes:
        node.meta.pop("val", None)  # the declared values: only what the run below makes counts
    try:
        FakeTensorProp(module, mode).propagate(image)
    except Exception as exc:  # an operator refusing what a lying one before it made: what was made tells
        failure = exc
    made = {node.name: value.numel() * value.element_size() for node in module.graph.nodes
            if isinstance(value := node.meta.get("val"), torch.Tensor)}
    found = [_too_big(f"tensor {name}", size) for name, size in made.items() if size > MAX_TENSOR_BYTES]
    if failure is not None and not found:
        raise failure
    return found


def load_exported(path: str | Path, trust_model: bool = False) -> tuple[export_flow.Forward, dict]:
    """``(forward, metadata)`` of a ``.pt2`` written by :func:`export`: forward maps NCHW images to logits.

    A ``.pt2`` is a zip that torch.export.load partly unpickles and partly execs; unless ``trust_model``, an
    archive holding anything :func:`export` never writes (:func:`findings`) is refused before
    torch reads it, what torch does unpickle (the example inputs) is loaded weights-only, and a program
    that would make a tensor beyond :data:`MAX_TENSOR_BYTES` for one image is refused before it runs."""
    extra = {_EXTRA_FILE: ""}
    if not trust_model:
        signing.require_signed(path)
    try:
        if not trust_model and (found := findings(Path(path))):
            raise formats.untrusted(path, found)
        with _quiet(), contextlib.nullcontext() if trust_model else _weights_only():
            module = torch.export.load(path, extra_files=extra).module()
        meta = formats.loads(extra[_EXTRA_FILE], path)
        if not trust_model and (found := _made_findings(module, meta)):
            raise formats.untrusted(path, found)
    except formats.ModelFileError:
        raise
    except pickle.UnpicklingError:  # what torch unpickles (the example inputs) holds more than tensors
        raise formats.untrusted(path, ["pickled data that weights-only loading refuses"]) from None
    except Exception as exc:  # a truncated or foreign archive: zip, JSON or schema errors
        raise formats.ModelFileError(f"{path} is not a readable torch.export program "
                                     f"({formats.first_line(exc)})") from None

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
