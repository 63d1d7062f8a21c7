"""Tables of parity records (``vgg parity``: the worst pair per check) and of environment records (the versions
`.ci/setup` resolved)."""

from __future__ import annotations

from common.tools.records import Record, RecordError
from common.tools.tables import Rendered, Store, caption, markdown, table

#: the checks of a parity record, in vgg parity's order, and their column headers
CHECKS = {"logits": "logits", "gradients": "gradients", "trajectory": "SGD steps", "train_logits": "train-mode logits",
          "train_gradients": "train-mode gradients", "running_statistics": "running statistics",
          "statistics_after_steps": "statistics after steps"}
#: the fp32 runs of docs/parity.md: small VGG, then batch norm (tiny at 32, small at 56)
SMALL = "20261123T093640-parity-small-56-amd"
TINY_BN = "20261124T070141-parity-tiny_bn-32-zen3"
SMALL_BN = "20261124T070011-parity-small_bn-56-zen3"
#: bf16 on a Zen 4 with AVX512_BF16 (another session's runs)
BF16 = ("20261206-parity-small-32-bf16-zen4", "20261206-parity-small_bn-32-bf16-zen4",
        "20261207T104052-parity-small_bn-32-bf16-zen4")
ONNX = "20261124T031858-parity-small-56-onnx-zen3"
WORKERS = "20261123T225341-parity-small-56-workers2-zen3"
WORKERS_MXNET = "20261207T001430-parity-tiny-32-workers2-intel-f6m207"


def sci(value: float) -> str:
    """A difference as the docs write it: two digits and a short exponent (6.2e-7), 0 for none."""
    if value == 0:
        return "0"
    mantissa, exponent = f"{value:.1e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def short(value: float) -> str:
    """A tolerance as the docs write it: no trailing zeros (1e-4, 6.25e-2)."""
    mantissa, exponent = f"{value:.2e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def worst(record: Record, check: str, with_name: str | None = None, without: str | None = None) -> dict:
    """The largest difference of ``check`` over the pairs (those holding ``with_name``, none holding
    ``without``); RecordError where the record has none."""
    found = [r for r in record.results("max_rel_diff", check=check)
             if (with_name is None or with_name in r["labels"]["pair"].split("-"))
             and (without is None or without not in r["labels"]["pair"].split("-"))]
    if not found:
        raise RecordError(f"record {record.id} has no {check} difference for {with_name or 'any'} without {without}")
    return max(found, key=lambda r: r["value"])


def _usual(used: list[Record], check: str) -> float:
    """The tolerance of ``check`` in the first of ``used`` that checked it: the table's tolerance row."""
    return next(r.value("tolerance", check=check) for r in used if r.results("tolerance", check=check))


def _cell(record: Record, check: str, usual: float) -> str:
    """The worst pair of ``check``, FAIL beyond the record's own tolerance, which is named where it is not the
    ``usual`` one (a bound derived for that run: bf16 with batch norm, docs/precision.md)."""
    if not record.results("max_rel_diff", check=check):
        return "—"
    value, tolerance = worst(record, check)["value"], record.value("tolerance", check=check)
    own = "" if tolerance == usual else f" (its bound {short(tolerance)})"
    return sci(value) + own + ("" if value <= tolerance else " FAIL")


def _run(record: Record) -> str:
    d = record.data
    first = d["results"][0]["labels"]
    return f"`{first['arch']}` at {first['size']}, {first['precision']}, {', '.join(d['details']['backends'])}"


def _parity_table(store: Store, ids: tuple[str, ...]) -> Rendered:
    used = [store[i] for i in ids]
    rows = [[_run(r), *(_cell(r, c, _usual(used, c)) for c in CHECKS)] for r in used]
    rows.append([f"tolerance ({used[0].data['results'][0]['labels']['precision']})",
                 *(short(_usual(used, c)) for c in CHECKS)])
    backends = list(dict.fromkeys(b for r in used for b in r.data["details"]["backends"]))
    text = markdown(["run", *CHECKS.values()], rows) + "\n\n" + caption(*used, backends=backends)
    return Rendered(text, [r.id for r in used])


@table("parity")
def parity_fp32(store: Store) -> Rendered:
    """The worst pair per check of the float32 parity runs: the small VGG, then the two batch-norm arches."""
    return _parity_table(store, (SMALL, TINY_BN, SMALL_BN))


@table("parity-bf16")
def parity_bf16(store: Store) -> Rendered:
    """The worst pair per check of the bf16 parity runs on a Zen 4 with AVX512_BF16."""
    return _parity_table(store, BF16)


def _inline(name: str, record_id: str, check: str, with_name: str | None = None, without: str | None = None):
    """Register ``name``: one figure for a sentence, the worst pair of ``check`` in ``record_id``."""
    def render(store: Store) -> Rendered:
        return Rendered(sci(worst(store[record_id], check, with_name, without)["value"]), [record_id])
    table(name)(render)


_inline("parity-small-logits", SMALL, "logits")
_inline("parity-small-trajectory", SMALL, "trajectory")
_inline("parity-small_bn-mxnet-train-gradients", SMALL_BN, "train_gradients", with_name="mxnet")
_inline("parity-small_bn-mxnet-trajectory", SMALL_BN, "trajectory", with_name="mxnet")
_inline("parity-small_bn-others-train-gradients", SMALL_BN, "train_gradients", without="mxnet")
_inline("parity-small_bn-jax-trajectory", SMALL_BN, "trajectory", with_name="jax", without="mxnet")
_inline("parity-onnx-oracle", ONNX, "logits", with_name="numpy")
_inline("parity-onnx-files", ONNX, "logits", without="numpy")


def _parity_workers(record: Record) -> Rendered:
    """``vgg parity --workers``: each engine against one process, and the W-process runs across frameworks."""
    engines = record.data["details"]["engines"]
    rows = []
    for backend in engines:
        cells = {r["labels"]["variant"]: sci(r["value"]) for r in record.results("max_rel_diff", backend=backend)}
        across = [r["value"] for r in record.results("max_rel_diff", check="trajectory")
                  if backend in r["labels"]["pair"].split("-")]
        rows.append([backend, engines[backend], cells.get("processes", "—"), cells.get("devices", "—"),
                     sci(max(across)) if across else "—"])
    workers = record.results()[0]["labels"]["workers"]
    headers = ["backend", "engine", f"{workers} processes vs 1", f"{workers} devices vs 1",
               f"{workers}-process runs across frameworks (worst pair)"]
    rows.append(["tolerance", "", short(record.value("tolerance", check="engine")), "",
                 short(record.value("tolerance", check="trajectory"))])
    return Rendered(markdown(headers, rows) + "\n\n" + caption(record, backends=list(engines)), [record.id])


@table("parity-workers")
def parity_workers(store: Store) -> Rendered:
    """torch and JAX on their engines, small VGG at 56x56."""
    return _parity_workers(store[WORKERS])


@table("parity-workers-mxnet")
def parity_workers_mxnet(store: Store) -> Rendered:
    """MXNet's synchronous engine against torch DDP, tiny VGG at 32x32."""
    return _parity_workers(store[WORKERS_MXNET])


#: the columns of README's versions table: header, packages shown in it joined by ' / '
VERSIONS = (("Python", ("python",)), ("NumPy", ("numpy",)), ("torch", ("torch",)),
            ("TensorFlow / Keras", ("tensorflow", "keras")), ("JAX / Flax / optax", ("jax", "flax", "optax")),
            ("MXNet", ("mxnet",)), ("export: onnx / ONNX Runtime / onnxscript / tf2onnx / jax2onnx",
                                    ("onnx", "onnxruntime", "onnxscript", "tf2onnx", "jax2onnx")))


def _version(record: Record, package: str) -> str:
    found = record.results("version", package=package)
    if not found:
        return "—"
    value = found[0]["value"]
    if package == "torch" and "+" not in value:  # no local tag: PyPI's build, not PyTorch's CPU index
        value += " (PyPI build" + (")" if record.data["machine"].get("gpu") else ", on the CPU)")
    return value


@table("versions")
def versions(store: Store) -> Rendered:
    """README's Versions tested: the newest environment record of each of .ci/setup's environments."""
    used = []
    for name in ("all", "modern"):
        found = [r for r in store.where("environment") if r.data["environment"].get("name") == name]
        if not found:
            raise RecordError(f"no environment record of {name!r} (vgg results environment, run by .ci/setup)")
        used.append(found[-1])
    rows = [[f"`{r.data['environment']['name']}`",
             *(" / ".join(_version(r, p) for p in packages) for _, packages in VERSIONS)] for r in used]
    text = markdown(["environment", *(header for header, _ in VERSIONS)], rows)
    return Rendered(text + "\n\n" + caption(*used, what="Resolved by `.ci/setup`: "), [r.id for r in used])
