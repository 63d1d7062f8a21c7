"""Tables of training records: the accuracy recipe's final figures (``accuracy``), one epoch with one and two
workers (``distributed-epoch``) and the races to a target accuracy (``race``), with the inline figures
README quotes from them."""

from __future__ import annotations

import statistics

from common.tools.records import Record
from common.tools.tables import Rendered, Store, caption, markdown, number, table, with_range

#: the backends in the order the pages list them, and their names in prose
ORDER = ("torch", "tf", "jax", "mxnet")
NAMES = {"torch": "PyTorch", "tf": "TensorFlow", "jax": "JAX", "mxnet": "MXNet"}
#: the accuracy recipe's runs, small VGG at 56x56 (torch, tf, jax: 2026-11-23; MXNet's re-run: 2026-12-05)
ACCURACY_56 = ("20261123T070502-accuracy-torch-small-56-amd", "20261123T084747-accuracy-tf-small-56-amd",
               "20261123T093731-accuracy-jax-small-56-amd", "20261205T081745-accuracy-mxnet-small-56-zen3")
#: the same with batch norm (2026-11-24, Zen 3)
ACCURACY_BN_56 = ("20261124T074048-accuracy-torch-small_bn-56-zen3", "20261124T125239-accuracy-tf-small_bn-56-zen3",
                  "20261124T112954-accuracy-jax-small_bn-56-zen3", "20261124T082515-accuracy-mxnet-small_bn-56-zen3")
#: one epoch in one process and on 2 workers, the backends docs/distributed.md shows (2026-11-23, Zen 3)
DISTRIBUTED_56 = ("20261123T224158-distributed-epoch-torch-small-56-zen3",
                  "20261123T224158-distributed-epoch-torch-small-56-w2-zen3",
                  "20261123T224158-distributed-epoch-jax-small-56-zen3",
                  "20261123T224158-distributed-epoch-jax-small-56-w2-zen3")
#: the races on the Zen 3: the race recipe (batch norm at 32x32, 3 epochs) and the accuracy recipe
RACE_FAST = "20261205T130732-race-small_bn-32-zen3"
RACE_56 = "20261205T142012-race-small-56-zen3"
#: the race recipe on a Zen 4 (another session): fp32, then bf16 for torch and TF together and each alone
RACE_ZEN4 = ("20261206T193113-race-small_bn-32-zen4", "20261206T193058-race-small_bn-32-bf16-zen4",
             "20261206T193842-race-small_bn-32-bf16-zen4", "20261206T193847-race-small_bn-32-bf16-zen4",
             "20261207T103429-race-small_bn-32-bf16-zen4", "20261207T102022-race-small_bn-32-zen4",
             "20261207T104055-race-small_bn-32-zen4", "20261207T113232-race-small_bn-32-zen4")
#: the race to 0.93 on a Zen 4: small_bn at 32x32, dense layers 512 wide, flips, label smoothing, test-time flip
RACE_093_ZEN4 = "20261207T130732-race-small_bn-32-zen4"
#: torch alone towards 0.93 at 32x32 on the Zen 4, one seed each: the dense layers' width, dropout, batch size
#: and the schedule's length tried (flip, label smoothing 0.1 and test-time flip in all)
RECIPE_093_ZEN4 = ("20261207T113232-race-small_bn-32-zen4", "20261207T124618-race-small_bn-32-zen4",
                   "20261207T125033-race-small_bn-32-zen4", "20261207T125718-race-small_bn-32-zen4",
                   "20261207T130136-race-small_bn-32-zen4")


def _backend(record: Record) -> str:
    return record.data["results"][0]["labels"]["backend"]


def _rendered(headers: list[str], rows: list[list], used: list[Record]) -> Rendered:
    return Rendered(markdown(headers, rows) + "\n\n" + caption(*used), [r.id for r in used])


def _accuracy(store: Store, ids: tuple[str, ...]) -> Rendered:
    used = sorted((store[i] for i in ids), key=lambda r: ORDER.index(_backend(r)))
    rows = [[_backend(r), number(r.value("test_acc"), 3), number(r.value("train_acc"), 3), number(r.value("loss"), 3),
             number(r.value("train_ex_s"), 0), number(r.value("seconds") / 60, 1)] for r in used]
    return _rendered(["backend", "test acc", "train acc", "loss", "examples/s", "minutes"], rows, used)


@table("accuracy-56")
def accuracy_56(store: Store) -> Rendered:
    """The accuracy recipe's final figures per backend: small VGG at 56x56, 10 epochs."""
    return _accuracy(store, ACCURACY_56)


@table("accuracy-small_bn-56")
def accuracy_bn_56(store: Store) -> Rendered:
    """The same with batch norm."""
    return _accuracy(store, ACCURACY_BN_56)


def _accuracy_range(store: Store, ids: tuple[str, ...]) -> Rendered:
    used = [store[i] for i in ids]
    accs = [r.value("test_acc") for r in used]
    return Rendered(f"{min(accs):.3f}-{max(accs):.3f}", [r.id for r in used])


@table("accuracy-56-range")
def accuracy_56_range(store: Store) -> Rendered:
    """Inline: the lowest and highest final test accuracy of the four backends."""
    return _accuracy_range(store, ACCURACY_56)


@table("accuracy-small_bn-56-range")
def accuracy_bn_56_range(store: Store) -> Rendered:
    """Inline: the same with batch norm."""
    return _accuracy_range(store, ACCURACY_BN_56)


@table("distributed-epoch-56")
def distributed_epoch_56(store: Store) -> Rendered:
    """One epoch of the accuracy recipe in one process and on 2 workers, each framework's own engine."""
    used = [store[i] for i in DISTRIBUTED_56]
    rows = []
    for r in used:
        world = r.data["details"]["world"]
        rows.append([_backend(r), world["engine"], f"{world['processes']} x {world['threads']}",
                     number(r.value("test_acc"), 3), number(r.value("train_acc"), 3), number(r.value("loss"), 3),
                     number(r.value("train_ex_s"), 0)])
    return _rendered(["backend", "engine", "workers x threads", "test acc", "train acc", "loss", "examples/s"],
                     rows, used)


# -- races -------------------------------------------------------------------------------------------------

def _raced(record: Record) -> list[str]:
    return [b for b in record.data["details"]["settings"]["backends"] if record.value("raced", backend=b)]


def _mean_std(result: dict, digits: int) -> str:
    """A mean over seeds with the samples' standard deviation where there are two or more."""
    samples = result.get("spread", {}).get("samples", [])
    std = f" ± {statistics.stdev(samples):.{digits}f}" if len(samples) > 1 else ""
    return f"{number(result['value'], digits)}{std}"


def _time(record: Record, backend: str) -> str:
    """The median time to target and its range over seeds; 'did not finish' where most runs did not."""
    result = record.one("time_to_target_s", backend=backend)
    if result["value"] is None:
        return "did not finish"
    text = with_range(result, 1) if result.get("spread", {}).get("n", 0) > 1 else number(result["value"], 1)
    if record.value("finished", backend=backend) < record.value("runs", backend=backend):
        text = text[:text.rindex("-") + 1] + "dnf)"
    return text


def _optional(record: Record, metric: str, backend: str, digits: int = 1) -> str:
    found = record.results(metric, backend=backend)
    return number(found[0]["value"], digits) if found else "—"


def _race_rows(record: Record, mlperf: bool) -> list[list]:
    raced = _raced(record)
    medians = [record.value("time_to_target_s", backend=b) for b in raced]
    fastest = min((m for m in medians if m is not None), default=None)
    rows = []
    for b in raced:
        median = record.value("time_to_target_s", backend=b)
        ratio = f"{median / fastest:.2f}x" if median is not None and fastest else "—"
        row = [b, f"{record.value('finished', backend=b)} / {record.value('runs', backend=b)}", _time(record, b)]
        row += [_optional(record, "mlperf_mean_s", b)] if mlperf else []
        row += [ratio, _optional(record, "train_to_target_s", b), _optional(record, "eval_to_target_s", b),
                _mean_std(record.one("epochs_to_target", backend=b), 2),
                _mean_std(record.one("test_acc", backend=b), 4)]
        rows.append(row)
    return rows


def _race(store: Store, record_id: str) -> Rendered:
    record = store[record_id]
    mlperf = bool(record.results("mlperf_mean_s"))
    headers = ["backend", "finished", "median s (range)", *(["MLPerf mean s"] if mlperf else []), "vs fastest",
               "training-only s", "evaluation s", "epochs to target", "final test acc"]
    return _rendered(headers, _race_rows(record, mlperf), [record])


@table("race-fast-zen3")
def race_fast_zen3(store: Store) -> Rendered:
    """The race recipe's race: time to 0.90 per backend over five seeds."""
    return _race(store, RACE_FAST)


@table("race-56-zen3")
def race_56_zen3(store: Store) -> Rendered:
    """The accuracy recipe's race: time to 0.90 per backend over three seeds."""
    return _race(store, RACE_56)


@table("race-093-zen4")
def race_093_zen4(store: Store) -> Rendered:
    """The race to 0.93 on a Zen 4: time to target per backend over seeds."""
    return _race(store, RACE_093_ZEN4)


@table("race-093-medians")
def race_093_medians(store: Store) -> Rendered:
    """Inline: the race to 0.93's median times to target."""
    return Rendered(_medians(store[RACE_093_ZEN4]), [RACE_093_ZEN4])


@table("race-zen4")
def race_zen4(store: Store) -> Rendered:
    """Races on a Zen 4, one seed each: the race recipe in fp32 and in bf16 (refused by the parity check
    before its batch-norm bound, raced after), and the augmented recipe towards 0.93."""
    used = [store[i] for i in RACE_ZEN4]
    rows = []
    for r in used:
        settings = r.data["details"]["settings"]
        for b in settings["backends"]:
            together = ",".join(settings["backends"])
            head = [b, settings["precision"], f"{settings['target']:g}", together]
            if b not in _raced(r):
                rows.append([*head, r.data["details"]["refused"][b], "—", "—", "—"])
                continue
            epochs = r.results("epochs_to_target", backend=b)
            rows.append([*head, _time(r, b), _optional(r, "train_to_target_s", b),
                         _mean_std(epochs[0], 2) if epochs else "—", _mean_std(r.one("test_acc", backend=b), 4)])
    return _rendered(["backend", "precision", "target", "raced with", "time to target s", "training-only s",
                      "epochs to target", "final test acc"], rows, used)


@table("recipe-093-zen4")
def recipe_093_zen4(store: Store) -> Rendered:
    """PyTorch towards 0.93 on a Zen 4, one seed per recipe: what the dense layers' width, their dropout, the
    batch size and the schedule's length do to the time and the accuracy."""
    used = [store[i] for i in RECIPE_093_ZEN4]
    rows = []
    for r in used:
        settings = r.data["details"]["settings"]
        dropout = settings.get("config", {}).get("dropout", 0.5)
        epochs = r.results("epochs_to_target", backend="torch")
        rows.append([settings["hidden"], f"{dropout:g}", settings["recipe"]["batch_size"], settings["max_epochs"],
                     f"{settings['target']:g}", _time(r, "torch"), _mean_std(epochs[0], 2) if epochs else "—",
                     _mean_std(r.one("test_acc", backend="torch"), 4)])
    return _rendered(["hidden", "dropout", "batch", "schedule epochs", "target", "time to target s",
                      "epochs to target", "final test acc"], rows, used)


def _medians(record: Record) -> str:
    """Inline: each backend's median time to target, fastest first, as prose."""
    times = sorted((record.value("time_to_target_s", backend=b), b) for b in _raced(record))
    parts = [f"{t:.0f} s in {NAMES[b]}" for t, b in times]
    return ", ".join(parts[:-1]) + f" and {parts[-1]}" if len(parts) > 1 else parts[0]


def _epochs(record: Record) -> str:
    """Inline: the lowest and highest mean epochs to target over the backends."""
    means = [record.value("epochs_to_target", backend=b) for b in _raced(record)]
    return f"{min(means):.2f}-{max(means):.2f}"


@table("race-fast-medians")
def race_fast_medians(store: Store) -> Rendered:
    """Inline: the race recipe's median times to target."""
    return Rendered(_medians(store[RACE_FAST]), [RACE_FAST])


@table("race-56-medians")
def race_56_medians(store: Store) -> Rendered:
    """Inline: the accuracy recipe's median times to target."""
    return Rendered(_medians(store[RACE_56]), [RACE_56])


@table("race-fast-epochs")
def race_fast_epochs(store: Store) -> Rendered:
    """Inline: the race recipe's epochs to target, lowest and highest backend mean."""
    return Rendered(_epochs(store[RACE_FAST]), [RACE_FAST])


@table("race-56-epochs")
def race_56_epochs(store: Store) -> Rendered:
    """Inline: the accuracy recipe's epochs to target, lowest and highest backend mean."""
    return Rendered(_epochs(store[RACE_56]), [RACE_56])


@table("race-speedup")
def race_speedup(store: Store) -> Rendered:
    """Inline: how many times as fast the race recipe reaches the target as the accuracy recipe, fastest
    backend against fastest backend."""
    fast, slow = store[RACE_FAST], store[RACE_56]
    best = [min(r.value("time_to_target_s", backend=b) for b in _raced(r)) for r in (fast, slow)]
    return Rendered(f"{best[1] / best[0]:.1f}x", [RACE_FAST, RACE_56])
