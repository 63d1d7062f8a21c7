"""Several machines, each framework's own engine, across network namespaces (tests/netns.py): every backend
runs a short training job on 2 nodes, which follows one process's trajectory, listens only on each node's
own address (TensorFlow, which binds every interface, says so) and checkpoints once; torch and JAX also on 2
nodes of 2 workers; torch on 3 nodes, through a killed node and a node whose link goes down, each time
stopping within a bound and resuming to the end (benchmarks/multinode.py measures every engine's faults).
Skipped, with the reason, where namespaces cannot be made."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from common.core import tolerances
from common.runtime import checkpoint, nodes
from common.runtime.distributed import DistributedError
from common.tools import parity_distributed
from helpers import load_backend
from netns import Cluster, Job, unavailable
from processes import is_loopback, vgg_cli, wait_until
from tiny_data import HIDDEN, fake_files

WHY = unavailable()
#: seconds a node's launcher waits for a silent worker; what a node whose peer hangs takes to stop
STALL_S = 30
#: the bound a surviving node stops within after a fault: the stall timeout, the launcher's grace, a margin
STOPS_WITHIN_S = STALL_S + 10 + 30
EPOCHS = 5
#: MXNet's oneDNN convolutions round differently for half a batch (on one machine too: 1e-5 apart after this
#: job's 20 steps, 1.5e-8 without oneDNN), which would hide what the engine does; its runs here go without it
ENV = {"mxnet": {"MXNET_MKLDNN_ENABLED": "0"}}

needs_namespaces = pytest.mark.skipif(WHY is not None, reason=f"no namespace nodes here: {WHY}")


def train_args(name: str, data: Path, out: Path, *extra: str) -> list[str]:
    """A short job without dropout (whose masks differ by worker): tiny VGG, 96 examples in batches of 24
    (shared equally by 2, 3 and 4 workers), 5 epochs."""
    return ["train", "--backend", name, "--arch", "tiny", "--resize", "32", "--hidden", str(HIDDEN), "--dropout", "0",
            "--epochs", str(EPOCHS), "--batch-size", "24", "--data-dir", str(data), "--no-verify", "--no-progress",
            "--out", str(out), "--stall-timeout", str(STALL_S), *extra]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("multinode-data")
    fake_files(folder, n_train=96, n_test=24)
    return folder


@pytest.fixture(scope="module")
def one_process(data, tmp_path_factory):
    """The weights of the same job in one process, per backend, trained once."""
    done: dict[str, dict] = {}

    def weights(name: str) -> dict:
        if name not in done:
            out = tmp_path_factory.mktemp(f"one-{name}")
            proc = vgg_cli(*train_args(name, data, out), env=ENV.get(name))
            _, err = proc.communicate(timeout=600)
            assert proc.returncode == 0, err
            done[name] = model_weights(name, out)
        return done[name]

    return weights


def model_weights(name: str, out: Path) -> dict:
    vgg = load_backend(name)
    return vgg.export_weights(vgg.load(out / f"model{vgg.MODEL_SUFFIX}"))


def check_listeners(job: Job, cluster: Cluster, name: str) -> None:
    """Every node's sockets listen on its own address or loopback; TensorFlow's on every interface, said."""
    for i, node in enumerate(job.nodes):
        assert node.listeners or i > 0, f"no listening socket seen on node 0: {node.text()}"
        for address, port, _ in node.listeners:
            own = address in (cluster.addresses[i], f"::ffff:{cluster.addresses[i]}") or is_loopback(address)
            if name == "tf" and not own:
                assert address in ("::", "0.0.0.0"), (i, address, port)
                assert "listen on all network interfaces" in node.text()[1]
            else:
                assert own, f"node {i} listens on {address}:{port}"


def follows_one_process(name: str, out: Path, one_process) -> None:
    diff = tolerances.relative_tree(one_process(name), model_weights(name, out))
    assert diff <= parity_distributed.TOLERANCE, f"{name}: {diff:.1e} from one process"


def wait_for_checkpoint(job: Job, out: Path) -> None:
    first = checkpoint.path_for(out / "checkpoints", 1)
    assert wait_until(lambda: first.exists() or any(n.proc.poll() is not None for n in job.nodes), 300)
    assert first.exists(), [n.text() for n in job.nodes]


def resume_finishes(cluster: Cluster, args: list[str], tmp_path: Path, out: Path) -> None:
    for path in checkpoint.list_checkpoints(out / "checkpoints"):
        checkpoint.read(path)  # complete, or it raises
    resumed = Job(cluster, [*args, "--resume"], tmp_path / "logs", "resume")
    assert resumed.wait(600), "the resumed job did not end"
    assert resumed.codes() == [0] * cluster.count, [n.text() for n in resumed.nodes]


def test_node_options_are_checked():
    """This machine's address must be on one of its interfaces; the rest is refused in one line."""
    found = nodes.parse("127.0.0.1,192.0.2.200", 0, None)
    assert (found.interface, found.address, found.master, found.port) == ("lo", "127.0.0.1", "127.0.0.1",
                                                                         nodes.DEFAULT_PORT)
    for text, rank, message in [("127.0.0.1", 0, "at least 2"), ("127.0.0.1,127.0.0.1", 0, "twice"),
                                ("127.0.0.1,192.0.2.200", None, "needs --node-rank"),
                                ("127.0.0.1,192.0.2.200", 2, "must be 0 to 1"),
                                ("127.0.0.1,192.0.2.200", 1, "no network interface of this machine holds")]:
        with pytest.raises(DistributedError, match=message):
            nodes.parse(text, rank, None)
    with pytest.raises(DistributedError, match="JAX has no setting for it"):  # no host name resolves to it first
        nodes.check_host_name(nodes.Nodes(("192.0.2.200", "127.0.0.1"), 0, 1, "lo"))
    assert nodes.bound_ports(found, "mxnet", 2) == [29500, 29501, 29502, 29503]
    assert nodes.bound_ports(found, "tf", 2) == [29500, 29501]


@pytest.mark.slow
@needs_namespaces
def test_two_nodes_follow_one_process(backend, data, one_process, tmp_path):
    name = backend.__name__.removeprefix("vgg_")
    out = tmp_path / "run"
    with Cluster(2) as cluster:
        job = Job(cluster, train_args(name, data, out), tmp_path / "logs", env=ENV.get(name))
        assert job.wait(600)
        assert job.codes() == [0, 0], [n.text() for n in job.nodes]
        check_listeners(job, cluster, name)
    assert [p.name for p in checkpoint.list_checkpoints(out / "checkpoints")] == \
        [f"epoch-{EPOCHS - 1:03d}.ckpt", f"epoch-{EPOCHS:03d}.ckpt"]
    said = [n.text()[0] for n in job.nodes]
    assert sum(f"epoch {EPOCHS}/{EPOCHS}" in text for text in said) == 1, "one chief prints and writes"
    follows_one_process(name, out, one_process)


@pytest.mark.once
@pytest.mark.slow
@needs_namespaces
@pytest.mark.backend("torch")
def test_a_killed_node_stops_the_job_and_resume_finishes_it(data, one_process, tmp_path):
    """Node 1's worker gets SIGKILL after the first checkpoint: both nodes stop (gloo sees the closed
    connection), node 1 naming the killed worker, node 0's worker saying in one line that its engine failed;
    the complete checkpoints stay and --resume on both nodes ends where one process does."""
    out = tmp_path / "run"
    args = train_args("torch", data, out)
    with Cluster(2) as cluster:
        job = Job(cluster, args, tmp_path / "logs")
        wait_for_checkpoint(job, out)
        victims = job.workers(1)
        assert victims, "node 1's worker not found"
        os.kill(victims[0], signal.SIGKILL)
        assert job.wait(STOPS_WITHIN_S), f"a node did not stop within {STOPS_WITHIN_S} s of the kill"
        assert all(code not in (0, None) for code in job.codes()), job.codes()
        said = job.nodes[1].text()[1].strip().splitlines()[-1]
        assert f"worker rank 1 (pid {victims[0]}) was killed by SIGKILL" in said, said
        survivor = job.nodes[0].text()[1]  # its worker's one line, then its launcher's, and no traceback
        assert "[rank 0] vgg train: error: rank 0 stopped: DistributedDataParallel (gloo) failed" in survivor
        assert "Traceback" not in survivor, survivor
        resume_finishes(cluster, args, tmp_path, out)
    follows_one_process("torch", out, one_process)


@pytest.mark.slow
@needs_namespaces
@pytest.mark.parametrize("name", ["torch", "jax"])
def test_two_nodes_of_two_workers_follow_one_process(name, data, one_process, tmp_path):
    load_backend(name)
    out = tmp_path / "run"
    with Cluster(2) as cluster:
        job = Job(cluster, train_args(name, data, out, "--workers", "2"), tmp_path / "logs")
        assert job.wait(600)
        assert job.codes() == [0, 0], [n.text() for n in job.nodes]
        check_listeners(job, cluster, name)
    follows_one_process(name, out, one_process)


@pytest.mark.once
@pytest.mark.slow
@needs_namespaces
@pytest.mark.backend("torch")
def test_three_nodes_and_a_link_that_goes_down(data, one_process, tmp_path):
    """Three nodes follow one process; a node whose interface goes down mid-run stops the job within the
    bound (gloo sees no error on a silent link: the launchers' stall timeout ends it), and --resume on all
    three finishes it."""
    out = tmp_path / "run"
    stall = STALL_S // 2  # the whole wait is this stall: torch's tiny steps show progress far more often
    args = train_args("torch", data, out, "--stall-timeout", str(stall))
    within = STOPS_WITHIN_S - STALL_S + stall
    with Cluster(3) as cluster:
        job = Job(cluster, args, tmp_path / "logs")
        wait_for_checkpoint(job, out)
        cluster.link(2, up=False)
        assert job.wait(within), f"a node did not stop within {within} s of its link going down"
        assert all(code not in (0, None) for code in job.codes()), job.codes()
        cluster.link(2, up=True)
        resume_finishes(cluster, args, tmp_path, out)
    follows_one_process("torch", out, one_process)
