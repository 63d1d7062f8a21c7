"""PyTorch serving exports: a ``torch.export`` program (``.pt2``) and ONNX through ``torch.onnx.export``
(the dynamo exporter), both with a dynamic batch axis and NCHW input."""

from __future__ import annotations

import contextlib
import copy
import functools
import warnings
from pathlib import Path

import numpy as np
import torch

from common.serving import export_flow, formats
from common.serving.optional import require
from vgg_torch.model import LAYOUT, NAME, VGG, predict
from vgg_torch.weights import export_weights, import_weights

_EXTRA_FILE = formats.METADATA_FILE
#: the opset docs/export.md names, pinned rather than left to the exporter's default of the day
ONNX_OPSET = 20


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


def load_exported(path: str | Path) -> tuple[export_flow.Forward, dict]:
    """``(forward, metadata)`` of a ``.pt2`` written by :func:`export`: forward maps NCHW images to logits."""
    extra = {_EXTRA_FILE: ""}
    try:
        with _quiet():
            module = torch.export.load(path, extra_files=extra).module()
    except Exception as exc:  # a truncated or foreign archive: zip, pickle or schema errors
        raise formats.ModelFileError(f"{path} is not a readable torch.export program ({type(exc).__name__}: "
                                     f"{str(exc)[:200]})") from None
    meta = formats.loads(extra[_EXTRA_FILE], path)

    def forward(images: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(np.ascontiguousarray(images, np.float32))).numpy()
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
