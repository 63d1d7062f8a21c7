"""Tables of benchmarks records: the book's code against the project's (book_reference.py), the A/B runs
(ab.py), export and serving (export_serve.py) and the trust boundary's cost (boundary_cost.py)."""

from __future__ import annotations

from dataclasses import dataclass

from common.tools.records import Record
from common.tools.tables import Rendered, Store, caption, environment_text, markdown, number, table, with_range

#: the book-reference runs the pages show, by what they are
BOOK_ALL = "20261124-book-reference-all-zen3"
BOOK_MODERN = "20261124-book-reference-modern-zen3"
BOOK_BEFORE_24 = "20261205-book-reference-issue24-before-zen3"
BOOK_AFTER_24 = "20261205-book-reference-issue24-after-zen3"
#: the newest book-reference run of the project's code in the `all` environment, quoted by README
BOOK_NEWEST = BOOK_AFTER_24
EXPORT_SERVE = "20261124T031700-export-serve-small-56-zen3"
BOUNDARY = "20261206T214917-boundary-cost-small-56-zen3"
BACKENDS = ("torch", "tf", "jax", "mxnet")


def _sizes(record: Record, backend: str) -> list[int]:
    return sorted({r["labels"]["size"] for r in record.results("ratio", backend=backend)}, reverse=True)


def _book_rows(record: Record) -> list[list[str | int]]:
    rows: list[list[str | int]] = []
    for backend in BACKENDS:
        for size in _sizes(record, backend):
            cell = {"backend": backend, "size": size}
            rows.append([backend, size, with_range(record.one("train_ex_s", code="book", **cell)),
                         with_range(record.one("train_ex_s", code="project", **cell)),
                         with_range(record.one("ratio", **cell), 2),
                         f"{record.value('peak_rss_mb', code='book', **cell):.0f} / "
                         f"{record.value('peak_rss_mb', code='project', **cell):.0f}"])
    return rows


def _book_table(record: Record) -> Rendered:
    headers = ("framework", "size", "book ex/s", "this project ex/s", "ratio", "peak RSS MB book / project")
    return Rendered(f"{markdown(headers, _book_rows(record))}\n\n{caption(record)}", [record.id])


@table("book-reference")
def book_reference(store: Store) -> Rendered:
    """The book's training step against the project's, per framework and size, in the `all` environment."""
    return _book_table(store[BOOK_ALL])


@table("book-reference-modern")
def book_reference_modern(store: Store) -> Rendered:
    """The same in the `modern` environment (the newest releases; no MXNet)."""
    return _book_table(store[BOOK_MODERN])


@table("book-reference-issue24")
def book_reference_issue24(store: Store) -> Rendered:
    """The project's examples/s and its ratio to the book's code before and after issue 24, same machine."""
    before, after = store[BOOK_BEFORE_24], store[BOOK_AFTER_24]
    rows = []
    for backend in BACKENDS:
        for size in _sizes(after, backend):
            cell = {"backend": backend, "size": size}
            rows.append([backend, size, with_range(before.one("train_ex_s", code="project", **cell)),
                         with_range(after.one("train_ex_s", code="project", **cell)),
                         with_range(before.one("ratio", **cell), 2), with_range(after.one("ratio", **cell), 2)])
    headers = ("framework", "size", "this project ex/s before", "after", "ratio to the book before", "after")
    return Rendered(f"{markdown(headers, rows)}\n\n{caption(before, after, what='before / after: ')}",
                    [before.id, after.id])


@table("book-reference-speed")
def book_reference_speed(store: Store) -> Rendered:
    """Inline, for README: the range of the project's ratio to the book's code at 224 in the newest run, with
    its machine and date."""
    record = store[BOOK_NEWEST]
    ratios = [r["value"] for r in record.results("ratio", size=224)]
    m = record.data["machine"]
    where = f"{m['cores']}-core {m['class'].replace('zen', 'Zen ')}"
    return Rendered(f"{min(ratios):.2f}-{max(ratios):.2f}x as fast as the book's own code for its framework "
                    f"({where}, {record.data['date'][:10]})", [record.id])


# --- the A/B runs ---------------------------------------------------------------------------------------

def _ab(name: str) -> str:
    return f"20261124-ab-{name}-zen3"


@dataclass(frozen=True)
class Ratio:
    """A variant's ratio to its run's baseline, median (range) over the rounds; ``rss`` adds both peak RSS."""

    record: str
    variant: str
    rss: bool = False

    def text(self, store: Store) -> tuple[str, str]:
        """The cell's text and the record it came from; 'fails' where the variant failed in every round."""
        record = store[self.record]
        if self.variant in record.data["details"].get("failed", {}):
            return "fails", record.id
        ratio = with_range(record.one("ratio", variant=self.variant), 2)
        if not self.rss:
            return ratio, record.id
        base = record.value("peak_rss_mb", variant=record.data["details"]["baseline"])
        return f"{ratio}, peak RSS {base:.0f} -> {record.value('peak_rss_mb', variant=self.variant):.0f} MB", record.id


#: the A/B table: (change, backend, cell at 224, cell at 56, kept); a cell is None (not measured) or a list
#: of Ratio and joining words; the change and kept texts are editorial
AB_ROWS = (
    ("`THP_MEM_ALLOC_ENABLE=1`: torch's allocator asks for huge pages (no 4 KiB faults on every step's fresh "
     "activations)", "torch", [Ratio(_ab("torch-224"), "thp")], [Ratio(_ab("torch-56"), "thp")],
     "yes: `vgg_torch` sets it before torch loads, unless the user set it (too late if torch was imported first)"),
    ("each block's last ReLU after its max pooling (same values and gradients, a quarter of the ReLU work)", "torch",
     [Ratio(_ab("torch-224"), "relupool")], [Ratio(_ab("torch-56"), "relupool")], "yes"),
    ("the same", "JAX", [Ratio(_ab("jax-224"), "relupool")], [Ratio(_ab("jax-56"), "relupool")], "no"),
    ("`GLIBC_TUNABLES=glibc.malloc.hugetlb=1` at process start", "torch", [Ratio(_ab("torch-224"), "hugetlb")], None,
     "(torch's own setting is used)"),
    ("the same", "JAX", [Ratio(_ab("jax-224"), "hugetlb")], [Ratio(_ab("jax-56"), "hugetlb")],
     "not by the package: a glibc tunable is read only when a process starts; set it yourself"),
    ("buffer donation of the model and optimizer to the JAX step", "JAX", [Ratio(_ab("jax-224"), "donate", rss=True)],
     [Ratio(_ab("jax-56"), "donate")], "no"),
    ("XLA's oneDNN dot fusion (`--xla_cpu_use_onednn --xla_cpu_experimental_onednn_fusion_type="
     "LIBRARY_FUSION_TYPE_DOT`)", "JAX", [Ratio(_ab("jax-224"), "dots")], [Ratio(_ab("jax-56"), "dots")],
     "no: jaxlib 0.7.1 refuses the step's 10x4096 gradient dot"),
    ("`TF_ONEDNN_USE_SYSTEM_ALLOCATOR=1` plus the glibc tunable", "TF",
     [Ratio(_ab("tf-224"), "sysalloc_huge", rss=True)], None, "no: a speed/memory trade; set both for less memory"),
    ("`GLIBC_TUNABLES=glibc.malloc.hugetlb=1` at process start", "TF", [Ratio(_ab("tf-224-cap-hugetlb"), "hugetlb")],
     [Ratio(_ab("tf-56-hugetlb"), "hugetlb")], "no (TF allocates from its own pool)"),
    ("the same", "MXNet", [Ratio(_ab("mxnet-224-hugetlb"), "hugetlb")], [Ratio(_ab("mxnet-56-hugetlb"), "hugetlb")],
     "no"),
    ("`TF_MKL_ALLOC_MAX_BYTES` (a cap on TF's oneDNN pool): 2.6 GB / 2.2 GB", "TF",
     [Ratio(_ab("tf-224-cap-hugetlb"), "cap2600", rss=True), " / ", Ratio(_ab("tf-224-cap-hugetlb"), "cap2200")],
     None, "no: the pool holds what the step needs (under the 2.2 GB cap the child was killed)"),
    ("XNNPACK for XLA's products (`XLA_FLAGS=--xla_cpu_experimental_xnn_fusion_type=LIBRARY_FUSION_TYPE_DOT`; "
     "another session, same CPU model)", "JAX", None, [Ratio(_ab("jax-56-xla-flags-run2"), "xnndot")], "no"),
    ("XLA's older CPU runtime (`--xla_cpu_use_thunk_runtime=false`)", "JAX", None,
     [Ratio(_ab("jax-56-xla-flags"), "legacy")],
     "no: jaxlib 0.7.1 has only the thunk runtime (\"CpuExecutable has no thunks\")"),
    ("Gluon's SGD updating one weight per operator call instead of four (`MXNET_OPTIMIZER_AGGREGATION_SIZE=1`; "
     "another session, same CPU model)", "MXNet", None,
     [Ratio(_ab("mxnet-56-aggregation"), "agg1"), " plain SGD, ", Ratio(_ab("mxnet-56-aggregation-run2"), "agg1"),
      " with momentum 0.9"],
     "no: within the noise of that session, and nothing with the training recipe's momentum"),
    ("the same aggregation at 64 weights per call", "MXNet", None, [Ratio(_ab("mxnet-56-env"), "agg")], "no"),
    ("MXNet's operator tuning off and dense weights in plain layout (`MXNET_USE_OPERATOR_TUNING=0`, "
     "`MXNET_MKLDNN_FORCE_FC_AB_FORMAT=1`)", "MXNet", None,
     [Ratio(_ab("mxnet-56-env-run2"), "notune"), " and ", Ratio(_ab("mxnet-56-env-run2"), "fcab"), " alone, ",
      Ratio(_ab("mxnet-56-env-run3"), "both"), " together"], "no"),
    ("`TF_ONEDNN_USE_SYSTEM_ALLOCATOR=1` alone (another session, same CPU model)", "TF",
     [Ratio(_ab("tf-224-sysalloc"), "sysalloc", rss=True)], [Ratio(_ab("tf-56-sysalloc"), "sysalloc", rss=True)],
     "no: below the book's memory at 224 and still faster than the book's code there, but slower at 56 for no "
     "memory gain; set it yourself for memory"),
)


def _ab_cell(parts: list | None, store: Store, used: dict[str, None]) -> str:
    if parts is None:
        return "—"
    texts = []
    for part in parts:
        if isinstance(part, Ratio):
            text, record_id = part.text(store)
            used[record_id] = None
            texts.append(text)
        else:
            texts.append(part)
    return "".join(texts)


def shared_caption(used: list[Record], command: str) -> str:
    """One caption for many runs of one machine, day and environment (each run's own command is in its
    record): the machine, the environment's versions across the runs, the date, the command's pattern and
    the records' ids; the usual caption where the runs differ in machine or day."""
    first = used[0]
    m = first.data["machine"]
    if len({(r.data["machine"]["cpu"], r.data["machine"]["cores"], r.data["date"][:10],
             r.data["environment"].get("name")) for r in used}) != 1:
        return caption(*used)
    merged = {k: v for r in used for k, v in r.data["environment"].items() if v}
    environment = environment_text(Record(first.path, {"environment": merged, "results": []}), BACKENDS)
    ids = ", ".join(f"`{r.id}`" for r in used)
    return f"*{m['cpu']}, {m['cores']} cores; {environment}; {first.data['date'][:10]}; `{command}`; records {ids}*"


@table("ab")
def ab(store: Store) -> Rendered:
    """The A/B table: each change's ratio to its run's baseline at 224 and 56 (median (range) over the
    rounds), and whether the project kept it."""
    used: dict[str, None] = {}
    rows = [[change, backend, _ab_cell(at224, store, used), _ab_cell(at56, store, used), kept]
            for change, backend, at224, at56, kept in AB_ROWS]
    records = [store[i] for i in used]
    text = markdown(("change", "backend", "224", "56", "kept"), rows)
    pattern = "python benchmarks/ab.py BACKEND SIZE base= VARIANT=..."
    return Rendered(f"{text}\n\n{shared_caption(records, pattern)}", list(used))


# --- export and serving, the trust boundary -------------------------------------------------------------

@table("export-serve")
def export_serve(store: Store) -> Rendered:
    """Each backend's live model, native export and ONNX file: export seconds, size, load seconds, images/s
    (median (range) of 3 passes), accuracy and top-1 agreement with the live model."""
    from common.serving import formats

    record = store[EXPORT_SERVE]
    images = record.data["details"]["images"]
    rows = []
    for backend in BACKENDS:
        live = {"backend": backend, "served": "live"}
        rows.append([backend, "live model", "", "", "", with_range(record.one("infer_ex_s", **live), 0),
                     f"{record.value('test_acc', **live):.4f}", ""])
        for fmt in formats.FORMATS:
            cell = {"backend": backend, "served": fmt}
            name = formats.export_suffix(backend, fmt) + (" (ONNX Runtime)" if fmt == "onnx" else "")
            rows.append([backend, name, number(record.value("export_s", **cell)),
                         number(record.value("size_mb", **cell)), number(record.value("load_s", **cell)),
                         with_range(record.one("infer_ex_s", **cell), 0),
                         f"{record.value('test_acc', **cell):.4f}",
                         f"{record.value('same_top1_as_live', **cell)}/{images}"])
    headers = ("backend", "format", "export s", "size MB", "load s", "images/s (range)", "accuracy",
               "same top-1 as live")
    return Rendered(f"{markdown(headers, rows)}\n\n{caption(record)}", [record.id])


@table("boundary-cost")
def boundary_cost(store: Store) -> Rendered:
    """Opening an export and classifying images in this process against inside the boundary's child: seconds
    to open, the child's extra seconds, and ms per image, median (range) over the rounds."""
    record = store[BOUNDARY]
    rows = []
    for backend in BACKENDS:
        for fmt in ("native", "onnx"):
            cell = {"backend": backend, "format": fmt}
            opened = [record.one("open_s", where=w, **cell) for w in ("in-process", "boundary")]
            per = [record.one("ms_per_image", where=w, **cell) for w in ("in-process", "boundary")]
            rows.append([backend, fmt, with_range(opened[0], 2), with_range(opened[1], 2),
                         f"{opened[1]['value'] - opened[0]['value']:+.2f}", with_range(per[0], 3),
                         with_range(per[1], 3), f"{per[1]['value'] - per[0]['value']:+.3f}"])
    headers = ("backend", "format", "open s in-process", "open s in the child", "extra s", "ms per image in-process",
               "ms per image in the child", "difference ms")
    return Rendered(f"{markdown(headers, rows)}\n\n{caption(record)}", [record.id])



#: the loader's run the Loader section shows
LOADER = "20261207T003959-loader-throughput-intel-f6m207"


@table("loader")
def loader(store: Store) -> Rendered:
    """Images/s of each backend's loader alone on one core, per image size, and its peak memory."""
    record = store[LOADER]
    sizes = sorted({r["labels"]["size"] for r in record.results("loader_images_s")}, reverse=True)
    rows = [[b, *(f"{record.value('loader_images_s', backend=b, size=s):,.0f}" for s in sizes),
             f"{record.value('peak_rss_mb', backend=b):.0f}"] for b in BACKENDS if record.results(backend=b)]
    headers = ["backend", *(f"{s}x{s} images/s" for s in sizes), "peak RSS MB"]
    return Rendered(f"{markdown(headers, rows)}\n\n{caption(record)}", [record.id])


# --- JAX's XLA:CPU kernels by jaxlib version --------------------------------------------------------------

#: the interleaved A/B of JAX's kernel paths in both environments, one record per image size
JAX_KERNELS = ("20261207T101644-ab-zen4", "20261207T101249-ab-zen4", "20261207T100846-ab-zen4")


@table("jax-kernels")
def jax_kernels(store: Store) -> Rendered:
    """JAX's training step per kernel path and jaxlib: examples/s median (range) and the ratio to jaxlib
    0.7.1's, round by round, per image size; each variant's jaxlib from the versions its children ran on."""
    records = [store[i] for i in JAX_KERNELS]
    sizes = [r.data["results"][0]["labels"]["size"] for r in records]
    variants = max((r.data["details"]["variants"] for r in records), key=len)  # a size may have measured fewer
    rows = []
    for v in variants:
        label = v["label"]
        versions = v.get("versions") or {}
        flags = " ".join(f"{k}={value}" for k, value in v["env"].items())
        cells = []
        for record in records:
            if label not in (w["label"] for w in record.data["details"]["variants"]):
                cells.append("—")
                continue
            if label in record.data["details"].get("failed", {}):
                cells.append("fails")
                continue
            ex = with_range(record.one("train_ex_s", variant=label), 1)
            ratio = record.results("ratio", variant=label)
            cells.append(f"{ex}, {with_range(ratio[0], 2)}x" if ratio else ex)
        rows.append([label, versions.get("jax", "—"), f"`{flags}`" if flags else "(none)", *cells])
    headers = ["variant", "jax", "settings", *(f"{s}x{s} ex/s, vs {variants[0]['label']}" for s in sizes)]
    text = markdown(headers, rows)
    return Rendered(f"{text}\n\n{shared_caption(records, 'python benchmarks/ab.py jax SIZE VARIANT=...')}",
                    [r.id for r in records])
