"""Tables of compare records (``vgg compare`` runs): the side-by-side speed tables, the rounds, the serving
latency and step split, the precision rows, the data-parallel engines' cost, and the few figures the prose
quotes inline."""

from __future__ import annotations

from common.tools.records import Record
from common.tools.tables import Rendered, Store, caption, markdown, number, table

#: the runs the pages show, by record id
AVX512 = "20261123T085022-compare-amd"
ENVS = "20261124T012151-compare-amd"
WORKERS = "20261123T224306-compare-amd"
ZEN3 = "20261124T125236-compare-zen3"
PRECISION_ZEN3 = "20261205T084046-compare-zen3"
LATENCY = "20261205T113712-compare-zen3"
ROUNDS = "20261205T114215-compare-zen3"
PRECISION_ZEN4_56 = "20261206T191340-compare-zen4"
PRECISION_ZEN4_224 = "20261206T192342-compare-zen4"
#: the small VGG with batch norm at 32x32 on the Zen 4, its dense layers 4096 and 512 wide (one round each)
HIDDEN_ZEN4 = {4096: "20261207T124213-compare-zen4", 512: "20261207T124415-compare-zen4"}
#: how the tables name each server of the latency run
SERVED = {"live": "live", "native": "native export", "onnx": "ONNX Runtime"}


def _bounds(result: dict) -> tuple[float, float]:
    spread = result.get("spread") or {}
    return spread.get("low", result["value"]), spread.get("high", result["value"])


def _text(result: dict | None, digits: int = 1, scale: float = 1.0, style: str = "f") -> str:
    """A figure times ``scale`` as 'median (low-high)', the median alone where its rounds agree at ``digits``
    (or it has one), '—' where the cell was not measured."""
    if result is None:
        return "—"
    low, high = (scale * b for b in _bounds(result))
    fmt = f".{digits}{style}"
    median = f"{scale * result['value']:{fmt}}"
    return median if f"{low:{fmt}}" == f"{high:{fmt}}" else f"{median} ({low:{fmt}}-{high:{fmt}})"


def _get(record: Record, metric: str, **labels) -> dict | None:
    found = record.results(metric, **labels)
    return found[0] if len(found) == 1 else None


def _cells(record: Record, backends: tuple[str, ...] | None = None, workers: int = 1) -> list[dict]:
    """The labels of every cell the record measured (its train_ex_s results), in the run's order."""
    return [r["labels"] for r in record.results("train_ex_s", workers=workers)
            if backends is None or r["labels"]["backend"] in backends]


def ceiling(record: Record, precision: str = "fp32") -> float | None:
    """The run's matmul ceiling in ``precision``: its fastest engine's product; None where it has none."""
    found = record.results("ceiling_gflop_s", precision=precision)
    return max(r["value"] for r in found) if found else None


def _share(record: Record, cell: dict, own: bool = False) -> str:
    """A cell's training GFLOP/s as a % of the float32 ceiling (of its own precision's where ``own``)."""
    peak = (own and ceiling(record, cell["precision"])) or ceiling(record)
    if peak is None:
        return "—"
    return _text(_get(record, "train_gflop_s", **cell), 0, 100 / peak)


def _ceiling_text(record: Record, precision: str = "fp32") -> str:
    """The run's ceiling in ``precision`` as a caption states it: the fastest product and every engine's."""
    engines = sorted(record.results("ceiling_gflop_s", precision=precision), key=lambda r: -r["value"])
    size = record.data.get("details", {}).get("ceiling_size")
    product = f"{size}x{size} product" if size else "product"
    each = ", ".join(f"{r['labels']['engine']} {r['value']:.0f}" for r in engines)
    name = "float32" if precision == "fp32" else precision
    return f"{name} matmul ceiling {engines[0]['value']:.0f} GFLOP/s, the fastest {product} ({each})"


def versus_fastest(record: Record, result: dict | None) -> str:
    """A figure against the best of its size, precision and worker count: 'fastest' or '0.82x', with
    '(tie with ...)' naming every backend whose range overlaps this one's; '—' where it was not measured."""
    if result is None:
        return "—"
    labels = {k: v for k, v in result["labels"].items() if k != "backend"}
    peers = [r for r in record.results(result["metric"], **labels) if r["labels"].keys() == result["labels"].keys()]
    best = max(r["value"] for r in peers)
    low, high = _bounds(result)
    ties = [r["labels"]["backend"] for r in peers if r is not result
            and _bounds(r)[0] <= high and low <= _bounds(r)[1]]
    verdict = "fastest" if result["value"] == best else f"{result['value'] / best:.2f}x"
    return verdict + (f" (tie with {', '.join(ties)})" if ties else "")


def _side_by_side(store: Store, record_id: str) -> Rendered:
    """A row per backend and size: training and inference throughput, GFLOP/s, its share of the float32
    ceiling, the first step and peak memory."""
    record = store[record_id]
    rows = [[c["backend"], c["size"], _text(_get(record, "train_ex_s", **c)), _text(_get(record, "infer_ex_s", **c)),
             _text(_get(record, "train_gflop_s", **c)), _share(record, c) + " %",
             _text(_get(record, "first_step_s", **c), 2), _text(_get(record, "peak_rss_mb", **c), 0)]
            for c in _cells(record)]
    text = markdown(["backend", "size", "train ex/s", "infer ex/s", "GFLOP/s (train)", "% of ceiling",
                     "first step s", "peak RSS MB"], rows)
    return Rendered(f"{text}\n\n{caption(record, what=_ceiling_text(record) + '. ')}", [record.id])


@table("compare-avx512")
def compare_avx512(store: Store) -> Rendered:
    """docs/results.md: the earliest side-by-side run, on the machine its session called AVX-512."""
    return _side_by_side(store, AVX512)


@table("compare-zen3")
def compare_zen3(store: Store) -> Rendered:
    """docs/results.md: the four backends at 224 on the Zen 3."""
    return _side_by_side(store, ZEN3)


@table("compare-hidden-zen4")
def compare_hidden_zen4(store: Store) -> Rendered:
    """docs/race.md: what the dense layers' width costs the small VGG at 32x32, per backend."""
    used = [store[i] for i in HIDDEN_ZEN4.values()]
    rows = [[hidden, c["backend"], _text(_get(r, "train_ex_s", **c)), _text(_get(r, "infer_ex_s", **c)),
             number(r.value("step_ms", **c))] for hidden, r in zip(HIDDEN_ZEN4, used) for c in _cells(r)]
    text = markdown(["hidden", "backend", "train ex/s", "infer ex/s", "training step ms"], rows)
    return Rendered(f"{text}\n\n{caption(*used)}", [r.id for r in used])


@table("compare-rounds-zen3")
def compare_rounds_zen3(store: Store) -> Rendered:
    """docs/results.md: three interleaved rounds at 56, median (range), ties by overlapping ranges."""
    record = store[ROUNDS]
    rows = []
    for c in _cells(record):
        train, infer = _get(record, "train_ex_s", **c), _get(record, "infer_ex_s", **c)
        split = f"{number(record.value('forward_ms', **c))} / {number(record.value('backward_update_ms', **c))}"
        rows.append([c["backend"], _text(train), versus_fastest(record, train), _text(infer),
                     versus_fastest(record, infer), _share(record, c), split])
    text = markdown(["backend", "train ex/s", "train vs fastest", "infer ex/s", "infer vs fastest",
                     "% of matmul ceiling", "forward / backward + update ms"], rows)
    return Rendered(f"{text}\n\n{caption(record, what=_ceiling_text(record) + '. ')}", [record.id])


@table("compare-latency-zen3")
def compare_latency_zen3(store: Store) -> Rendered:
    """docs/results.md: batch-1 latency of the live model and both exports, and the step split."""
    record = store[LATENCY]
    rows = []
    for c in _cells(record):
        served = [" / ".join(_text(_get(record, p, served=s, **c), 2) for p in ("p50_ms", "p90_ms", "p99_ms"))
                  for s in SERVED]
        rows.append([c["backend"], *served, _text(_get(record, "forward_ms", **c)),
                     _text(_get(record, "backward_update_ms", **c)), _text(_get(record, "train_ex_s", **c))])
    text = markdown(["backend", *(f"{name} p50 / p90 / p99" for name in SERVED.values()), "forward ms",
                     "backward + update ms", "train ex/s"], rows)
    return Rendered(f"{text}\n\n{caption(record)}", [record.id])


def _precision_rows(record: Record, gflops: bool) -> list[list]:
    """A row per backend and precision: throughput, its ratio to the backend's fp32 row, the logits' distance
    from the float64 oracle, the first step; with ``gflops`` the size, GFLOP/s and the share of the ceiling
    of the row's own precision."""
    rows = []
    for c in _cells(record):
        train = _get(record, "train_ex_s", **c)
        fp32 = _get(record, "train_ex_s", **{**c, "precision": "fp32"})
        ratio = f"{train['value'] / fp32['value']:.2f}x" if train and fp32 else "—"
        row = [c["backend"], *([c["size"]] if gflops else []), c["precision"], _text(train), ratio,
               _text(_get(record, "infer_ex_s", **c))]
        if gflops:
            row += [_text(_get(record, "train_gflop_s", **c)), _share(record, c, own=True) + " %"]
        rows.append(row + [_text(_get(record, "parity_error", **c), 1, style="e"),
                           _text(_get(record, "first_step_s", **c), 2)])
    return rows


@table("precision-zen3")
def precision_zen3(store: Store) -> Rendered:
    """docs/results.md: fp32, bf16 and fp16 on a CPU without bf16 or fp16 products."""
    record = store[PRECISION_ZEN3]
    text = markdown(["backend", "precision", "train ex/s", "vs fp32", "infer ex/s", "logits vs float64 oracle",
                     "first step s"], _precision_rows(record, gflops=False))
    return Rendered(f"{text}\n\n{caption(record)}", [record.id])


def _precision_zen4(store: Store, record_id: str) -> Rendered:
    record = store[record_id]
    text = markdown(["backend", "size", "precision", "train ex/s", "vs fp32", "infer ex/s", "GFLOP/s (train)",
                     "% of its precision's matmul ceiling", "logits vs float64 oracle", "first step s"],
                    _precision_rows(record, gflops=True))
    what = (f"Another machine, a Zen 4 with AVX512_BF16, measured by another session; {_ceiling_text(record)}; "
            f"{_ceiling_text(record, 'bf16')}. ")
    return Rendered(f"{text}\n\n{caption(record, what=what)}", [record.id])


@table("precision-zen4-56")
def precision_zen4_56(store: Store) -> Rendered:
    """docs/precision.md: fp32 against bf16 per backend at 56 on a CPU with bf16 products."""
    return _precision_zen4(store, PRECISION_ZEN4_56)


@table("precision-zen4-224")
def precision_zen4_224(store: Store) -> Rendered:
    """docs/precision.md: fp32 against bf16 in torch and TF at 224 on the same CPU."""
    return _precision_zen4(store, PRECISION_ZEN4_224)


@table("distributed-workers")
def distributed_workers(store: Store) -> Rendered:
    """docs/distributed.md: what two worker processes cost against one process on the same cores (torch and
    JAX: the prose says why TF's and MXNet's rows of that run are not shown)."""
    record = store[WORKERS]
    engines = {(c["backend"], c["workers"]): c.get("engine") for c in record.data["details"]["cells"]}
    batch = record.data["details"]["batch_size"]
    rows = []
    for c in _cells(record, ("torch", "jax"), workers=2):
        two = record.value("train_ex_s", **c)
        one = record.value("train_ex_s", **{**c, "workers": 1})
        comm = _get(record, "comm_ms", **c)
        rows.append([c["backend"], c["size"], c["workers"], engines[c["backend"], c["workers"]],
                     f"{1000 * batch / two:.0f}", _text(comm) if comm else "not reported", f"{two / one:.2f}",
                     f"{two / one / c['workers']:.2f}"])
    text = markdown(["backend", "size", "workers", "engine", "ms per step", "of which all-reduce (ms)",
                     "throughput vs 1 process", "scaling efficiency T_W / (W x T_1)"], rows)
    return Rendered(f"{text}\n\n{caption(record, backends=('torch', 'jax'))}", [record.id])


# -- figures the prose quotes, rendered inline ----------------------------------------------------------------

def _span(record: Record, metric: str, digits: int, backends: tuple[str, ...] | None = None, **labels) -> str:
    """'low-high' of ``metric`` over the backends' cells (all where None)."""
    values = [r["value"] for r in record.results(metric, **labels)
              if backends is None or r["labels"]["backend"] in backends]
    return f"{min(values):.{digits}f}-{max(values):.{digits}f}"


@table("latency-onnx-p50")
def latency_onnx_p50(store: Store) -> Rendered:
    """Inline: the p50 range of every backend's ONNX export in ONNX Runtime, ms."""
    return Rendered(_span(store[LATENCY], "p50_ms", 1, served="onnx"), [LATENCY])


@table("latency-live-p50-tf-jax")
def latency_live_p50_tf_jax(store: Store) -> Rendered:
    """Inline: the p50 of the live Keras and Flax models, ms."""
    return Rendered(_span(store[LATENCY], "p50_ms", 1, ("tf", "jax"), served="live"), [LATENCY])


@table("latency-onnx-export-tf-jax")
def latency_onnx_export_tf_jax(store: Store) -> Rendered:
    """Inline: the seconds TF's and JAX's ONNX exports took (tf2onnx, jax2tf + tf2onnx)."""
    return Rendered(_span(store[LATENCY], "export_s", 1, ("tf", "jax"), served="onnx"), [LATENCY])


@table("compare-envs-train")
def compare_envs_train(store: Store) -> Rendered:
    """Inline: training examples/s per backend of the run across two environments, 'a / b / c / d'."""
    record = store[ENVS]
    return Rendered(" / ".join(f"{r['value']:.0f}" for r in record.results("train_ex_s")), [ENVS])


#: the main job (.ci/main) run twice in a row on this project's Intel Xeon, the same tree
INTEL, INTEL_AGAIN = "20261207T002520-compare-intel-f6m207", "20261207T003150-compare-intel-f6m207"


@table("compare-intel")
def compare_intel(store: Store) -> Rendered:
    """docs/results.md: the main job's four backends at 56 on the Intel Xeon."""
    return _side_by_side(store, INTEL)


@table("compare-intel-repeat")
def compare_intel_repeat(store: Store) -> Rendered:
    """Inline: how many cells of the main job's second run are distinguishable from the first's."""
    from common.tools.results import comparison

    rows = [r for r in comparison(store[INTEL], store[INTEL_AGAIN]) if r["verdict"].endswith("distinguishable")]
    apart = [r for r in rows if r["verdict"] == "distinguishable"]
    return Rendered(f"{len(rows) - len(apart)} of its {len(rows)} figures with rounds are not distinguishable "
                    f"from the first run's; {len(apart)} are", [INTEL, INTEL_AGAIN])
