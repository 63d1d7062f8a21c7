"""The dictionaries the reports are made of, as ``TypedDict``s in one place: ``vgg compare``'s compare.json
(``common.tools.compare``, its rows from ``common.tools.measure``), ``vgg race``'s race.json
(``common.tools.race``) and the parity reports (``common.tools.parity``, ``common.tools.parity_distributed``).
Types only: what the JSON holds is unchanged. A report grows while its command runs, so the keys added later
(and those a run has only sometimes) are in a ``total=False`` part. The leaves of a union (a measured or a
failed run) are ``@final``, so that ``"error" in run`` tells mypy which one it is."""

from __future__ import annotations

from typing import Any, NotRequired, TypedDict, final

import numpy as np

#: a backend's tool versions and interpreter (``common.core.backends.environment``), as recorded
Environment = dict[str, Any]


class Machine(TypedDict):
    """``common.runtime.machine.machine()``: the machine block of compare's and race's reports."""

    cores: int
    cpu: str
    threads: dict[str, Any]  # each backend's thread settings (common.core.backends)
    date: str


class CompareMachine(Machine, total=False):
    system: dict[str, Any]  # records.machine(): what a record says of the machine
    python: str  # older reports: the one interpreter every backend ran in
    versions: dict[str, str]  # ... and its distributions' versions


# ---- vgg compare

class CeilingRun(TypedDict):
    """One measurement of a product ceiling (``measure.matmul_ceiling``, every interpreter's merged)."""

    gflop_s: float
    by_engine: dict[str, float]
    samples: dict[str, list[float]]
    size: int


class _CeilingSpread(TypedDict):
    engine: str  # the fastest engine, whose products the spread is of
    low: float
    high: float
    products: int


class CeilingSpread(_CeilingSpread, total=False):
    before: float | None  # the fastest engine's ceiling before the rows
    after: float | None  # ... and after them


class Ceiling(TypedDict):
    """A ceiling merged from its measurements (``compare_report.merge_ceilings``)."""

    gflop_s: float
    by_engine: dict[str, float]
    spread: CeilingSpread


class _Latency(TypedDict):
    p50_ms: float
    p90_ms: float
    p99_ms: float
    requests: int


@final
class Latency(_Latency, total=False):
    """Batch-1 serving latency of one server (``measure.latency``)."""

    export_s: float  # an export's: the seconds writing it took


@final
class FailedServer(TypedDict):
    """A server whose export could not be made or run here."""

    error: str


class StepSplit(TypedDict):
    """Forward and backward-plus-update ms of one training step (``measure.time_split``)."""

    forward_ms: float
    backward_update_ms: float
    step_ms: float
    split_pairs: int


class _Cell(TypedDict):
    backend: str
    size: int
    precision: str
    workers: int


class _Measured(_Cell):
    threads: int | None
    engine: str
    import_s: float
    env: Environment
    device: str
    build_s: float
    first_step_s: float
    train_ex_s: float
    train_gflop_s: float
    comm_ms: float | None
    peak_rss_mb: float


class Measured(_Measured, total=False):
    """What a child measures (``measure.measure``): the throughput, and what one process measures besides it
    (W workers measure throughput alone)."""

    forward_ms: float  # the step split (StepSplit)
    backward_update_ms: float
    step_ms: float
    split_pairs: int
    infer_ex_s: float
    parity_error: float
    test_acc: float  # with --train-epochs
    history: list[dict[str, Any]]  # ... and its history's rows
    kernels: str  # which kernels computed the convolutions (the backend's ``kernels``); absent in older reports
    latency: dict[str, Latency | FailedServer]  # with --latency-requests: per server of measure.SERVED
    batch_size: int  # added by the parent


@final
class MeasuredRun(Measured):
    """One child's measurement of a cell in one round (``measure.measure``, plus the parent's fields)."""

    round: int


class _FailedCell(_Cell):
    error: str
    env: Environment  # {"executable": the interpreter it was to run}


@final
class FailedRun(_FailedCell):
    """A cell whose child failed in one round, or that was refused (its reason, once)."""

    round: int


CompareRun = MeasuredRun | FailedRun


class _MeasuredRow(Measured):
    rounds: list[int]  # the rounds measured
    range: dict[str, list[float]]  # figure path "a.b" -> [min, max] over the rounds


@final
class MeasuredRow(_MeasuredRow, total=False):
    """A cell summarised over its rounds (``spreads.summarise``): the first successful run's fields, every
    figure the median of the rounds'."""

    failed_rounds: dict[str, str]  # round -> error, where some failed


@final
class FailedRow(_FailedCell):
    """A cell no round of which succeeded: its last run's fields."""

    failed_rounds: dict[str, str]


CompareRow = MeasuredRow | FailedRow


class _CompareReport(TypedDict):
    command: str
    arch: str
    hidden: int
    batch_size: int
    seconds: float
    precisions: list[str]
    device: str
    train_epochs: int
    machine: CompareMachine
    commit: list[Any]  # records.commit(): [head, dirty]
    pythons: dict[str, str]  # backend -> interpreter
    rounds: int
    latency_requests: int
    matmul_runs: dict[str, CeilingRun]  # "before" (and "after") the rows: float32's
    runs: list[CompareRun]
    rows: list[CompareRow]


class CompareReport(_CompareReport, total=False):
    """compare.json."""

    ceilings_skipped: dict[str, str]  # precision -> why it has no ceiling of its own
    ceiling_runs: dict[str, dict[str, CeilingRun]]  # precision -> "before"/"after" -> measurement
    matmul_gflop_s: float
    matmul_by_engine: dict[str, float]
    matmul_spread: CeilingSpread
    ceilings: dict[str, Ceiling]  # precision -> its merged ceiling
    wall_s: float


# ---- vgg race

class RaceRecipe(TypedDict):
    lr: float
    batch_size: int
    momentum: float
    weight_decay: float
    schedule: str
    warmup_epochs: float
    crop_padding: int
    flip: bool
    label_smoothing: float
    test_flip: bool


class _RaceSettings(TypedDict):
    backends: list[str]
    arch: str
    hidden: int
    resize: int
    precision: str
    device: str
    target: float
    max_epochs: int
    eval_every: float
    seeds: int
    recipe: RaceRecipe
    limit: int | None
    eval_limit: int | None
    data_dir: str | None
    verify: bool


class RaceSettings(_RaceSettings, total=False):
    """A race's settings (``race.settings``): what --resume must repeat."""

    config: dict[str, Any]  # the raced ModelConfig's other fields that differ from their defaults


class Evaluation(TypedDict):
    """One evaluation of a race run, as its child reports it."""

    wall_s: float
    train_s: float
    eval_s: float
    epoch: float
    steps: int
    test_acc: float
    train_loss: float


class _RaceRun(TypedDict):
    backend: str
    seed: int
    evaluations: list[Evaluation]


class RaceRun(_RaceRun, total=False):
    """One backend and seed: the child's start and end events, its error, and the outcome
    (``race_report.settle``)."""

    interpreter_s: float
    import_s: float
    data_s: float
    build_s: float
    engine_s: float
    steps_per_epoch: int
    parameters: int
    peak_rss_mb: float
    env: Environment
    error: str
    status: str  # "finished", "did not finish" or "error"
    best_acc: float | None
    final_acc: float | None
    time_to_target_s: float
    train_to_target_s: float
    eval_to_target_s: float
    epochs_to_target: float
    steps_to_target: int


#: one cell of a parity matrix: [backend, backend, difference] (a list in the JSON)
ParityCell = tuple[str, str, float]


class RaceParity(TypedDict):
    """The parity check before a race: each quantity's cells, and the backends that do not race, with the
    reason."""

    matrices: dict[str, list[ParityCell]]
    refused: dict[str, str]
    bounds: NotRequired[dict[str, float]]  # each quantity's bound for the raced model (absent in older races)


class SeedSpread(TypedDict):
    """Mean and sample standard deviation over seeds (None with too few)."""

    mean: float | None
    std: float | None
    n: int


class _BackendStats(TypedDict):
    runs: int
    finished: int
    did_not_finish: int
    errors: int


class BackendStats(_BackendStats, total=False):
    """One backend's statistics over its seeds (``race_report.summarise``); the figures only where a run did
    not fail, None for a time no run reached."""

    time_median_s: float | None
    time_min_s: float | None
    time_max_s: float | None
    olympic_mean_s: float | None
    train_median_s: float | None
    eval_median_s: float | None
    epochs_to_target: SeedSpread
    steps_to_target: SeedSpread
    final_acc: SeedSpread
    best_acc: float | None
    vs_fastest: float  # its median time over the fastest median


class Equivalence(TypedDict):
    """The equivalence test of two backends' epochs-to-target."""

    pair: list[str]
    difference: float
    margin: float
    equivalent: bool


class RaceSummary(TypedDict):
    backends: dict[str, BackendStats]
    equivalence: list[Equivalence]


class Provenance(TypedDict):
    machine: dict[str, Any]
    environment: dict[str, Any]
    commit: list[Any]


class _RaceReport(TypedDict):
    command: str
    settings: RaceSettings
    machine: Machine
    runs: list[RaceRun]


class RaceReport(_RaceReport, total=False):
    """race.json."""

    provenance: Provenance
    parity: RaceParity
    summary: RaceSummary  # rewritten with the report


# ---- vgg parity

#: quantity -> (backend, backend) -> difference (``parity.run``)
ParityMatrices = dict[str, dict[tuple[str, str], float]]


class DistributedParityReport(TypedDict):
    """``parity_distributed.run``: per backend, each worker configuration's difference from its one-process
    run (or why it failed), and the W-process runs' differences across backends."""

    engines: dict[str, dict[str, float | str]]
    across: dict[tuple[str, str], float]
    workers: int
    trajectories: dict[str, dict[str, np.ndarray]]  # backend -> canonical weights after the W-process run
