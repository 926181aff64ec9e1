"""Training on several processes (torchrun, gloo on the CPU): one step on 2 ranks equals one
process's step on the concatenated batch, checkpoints resume to the bundle of an
uninterrupted run (1 and 2 processes, killed for real), and the per-epoch CSV."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from serve_helpers import free_port
from test_train import TINY, toy_dataset, toy_split

from hashkit.bundle import load_bundle
from hashkit.config import TrainConfig
from hashkit.errors import HashkitError
from hashkit.train import train_network

# One step of the method's loss on a fixed batch of 16, on 1 process (the whole batch) or on
# each of the ranks of torchrun (its half), with the gathered batch and DistributedDataParallel
# as hashkit.train uses them; writes the loss, every gradient and the batch norms' new
# running statistics to OUT/<world>-<rank>.pt.
STEP = """
import sys
import torch
import hashkit  # noqa: F401
from hashkit import distributed
from hashkit.config import TrainConfig
from hashkit.methods import get_method, make_method_loss
from hashkit.models import HashNet, NetworkConfig


def step(x, labels, sync):
    torch.manual_seed(0)
    net = HashNet(NetworkConfig(bits=8, input_size=16, channels=1, mean=[0.0], std=[1.0],
                                head=get_method(method).head))
    for m in net.modules():  # no dropout: the ranks' masks could not match one process's
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    loss_fn = make_method_loss(TrainConfig(bits=8, method=method), labels.numpy())
    # built before the batch norms are swapped, as in hashkit.train
    optimiser = torch.optim.SGD([*net.parameters(), *loss_fn.parameters()], lr=0.1)
    if world == 1:
        loss = loss_fn(net(x), labels)
    else:
        if sync:
            distributed.sync_batch_norms(net, "cpu")
        model = torch.nn.parallel.DistributedDataParallel(net)
        part = distributed.shard(16, rank, world)
        h = distributed.gather_batch(model(x[part]))
        loss = loss_fn(h, distributed.gather_labels(labels[part]))
    loss.backward()
    params = [*net.named_parameters(), *loss_fn.named_parameters()]
    grads = {n: p.grad.clone() for n, p in params}
    optimiser.step()
    if world > 1 and sync:
        distributed.restore_batch_norms(net)
    return {
        "loss": loss.detach(),
        "grads": grads,
        "stats": {n: b.clone() for n, b in net.named_buffers() if "running" in n},
        "stepped": {n: p.detach().clone() for n, p in net.state_dict(keep_vars=True).items()},
    }


out, method = sys.argv[1], sys.argv[2]
torch.manual_seed(1)
labels = torch.arange(4).repeat_interleave(4)
x = torch.randn(16, 1, 16, 16) + labels[:, None, None, None].float()
if len(sys.argv) > 3:
    with distributed.process_group() as (rank, world):
        result = {"sync": step(x, labels, True), "plain": step(x, labels, False)}
else:
    rank, world = 0, 1
    result = {"sync": step(x, labels, True)}
torch.save(result, f"{out}/{world}-{rank}.pt")
"""


def torchrun(args: list, **kwargs) -> list:
    return [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
        "--master-addr", "127.0.0.1", "--master-port", str(free_port()), *map(str, args),
    ]  # fmt: skip


ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.mark.parametrize("method", ["sdsh", "greedyhash"])
def test_a_step_on_two_ranks_equals_one_process_on_the_concatenated_batch(tmp_path, method):
    script = tmp_path / "step.py"
    script.write_text(STEP)
    one = subprocess.run(
        [sys.executable, script, tmp_path, method], capture_output=True, text=True, env=ENV
    )
    assert one.returncode == 0, one.stderr
    two = subprocess.run(
        torchrun([script, tmp_path, method, "ddp"]),
        capture_output=True, text=True, timeout=600, env=ENV,
    )  # fmt: skip
    assert two.returncode == 0, two.stderr
    single = torch.load(tmp_path / "1-0.pt", weights_only=True)["sync"]
    for rank in (0, 1):
        both = torch.load(tmp_path / f"2-{rank}.pt", weights_only=True)
        ddp, plain = both["sync"], both["plain"]
        torch.testing.assert_close(ddp["loss"], single["loss"], rtol=1e-5, atol=1e-6)
        assert ddp["grads"].keys() == single["grads"].keys()
        for name, g in single["grads"].items():
            torch.testing.assert_close(ddp["grads"][name], g, rtol=1e-5, atol=1e-6, msg=name)
        assert ddp["stats"].keys() == single["stats"].keys() and single["stats"]
        for name, s in single["stats"].items():
            torch.testing.assert_close(ddp["stats"][name], s, rtol=1e-5, atol=1e-6, msg=name)
        # and the optimiser, built before the batch norms were swapped, moved every weight
        # (the batch norms' too) as one process's did
        assert ddp["stepped"].keys() == single["stepped"].keys()
        for name, w in single["stepped"].items():
            torch.testing.assert_close(ddp["stepped"][name], w, rtol=1e-5, atol=1e-6, msg=name)
        # not equal by accident: batch norms over each rank's half alone (DDP without
        # hashkit's global batch norms) give other gradients
        assert any(
            not torch.allclose(plain["grads"][n], g, rtol=1e-3, atol=1e-5)
            for n, g in single["grads"].items()
        )


def test_rank_share_cuts_every_global_batch_into_disjoint_slices_in_rank_order():
    from hashkit.distributed import RankShare
    from hashkit.sampling import ClassBalancedBatchSampler

    labels = np.repeat(np.arange(4), 10)
    global_batches = ClassBalancedBatchSampler(labels, 8, 4, seed=3).epoch_batches(0)
    shares = [
        list(RankShare(ClassBalancedBatchSampler(labels, 8, 4, seed=3), r, 2)) for r in (0, 1)
    ]
    assert len(shares[0]) == len(shares[1]) == len(global_batches)
    for batch, a, b in zip(global_batches, *shares, strict=True):
        assert len(a) == len(b) == 4 and not set(a) & set(b)
        assert np.array_equal(np.concatenate([a, b]), batch)


def test_a_batch_that_the_processes_cannot_share_evenly_is_refused():
    from hashkit.distributed import RankShare

    with pytest.raises(HashkitError, match="multiple of the process count"):
        list(RankShare([np.arange(9)], 0, 2))


class Stop(Exception):
    pass


def stop_after(epoch: int):
    def log(message: str) -> None:
        if message.startswith(f"epoch {epoch}/"):
            raise Stop

    return log


def test_a_resumed_run_trains_the_network_of_an_uninterrupted_one(tmp_path):
    ds = toy_dataset()
    split = toy_split(ds)
    config = TrainConfig(**{**TINY, "epochs": 4})
    whole, losses = train_network(
        ds, split.train, config, checkpoint=tmp_path / "a.ckpt", epoch_log=tmp_path / "a.csv"
    )
    with pytest.raises(Stop):  # a crash after the checkpoint of epoch 2
        train_network(ds, split.train, config, checkpoint=tmp_path / "b.ckpt", log=stop_after(2))
    resumed, resumed_losses = train_network(
        ds, split.train, config, checkpoint=tmp_path / "b.ckpt", resume=True
    )
    assert resumed_losses == losses
    for name, value in whole.state_dict().items():
        assert torch.equal(resumed.state_dict()[name], value), name
    # and not because training did nothing: two more epochs than the checkpoint
    state = torch.load(tmp_path / "b.ckpt", weights_only=True)
    assert len(state["epoch_losses"]) == 4
    rows = list(csv.DictReader(open(tmp_path / "a.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    assert [float(r["loss"]) for r in rows] == pytest.approx(losses)


def test_resuming_with_another_recipe_or_without_a_checkpoint_is_refused(tmp_path):
    ds = toy_dataset()
    split = toy_split(ds)
    config = TrainConfig(**{**TINY, "epochs": 3})
    with pytest.raises(Stop):
        train_network(ds, split.train, config, checkpoint=tmp_path / "c.ckpt", log=stop_after(1))
    other = TrainConfig(**{**TINY, "epochs": 5})
    with pytest.raises(HashkitError, match="its epochs is 3, this run's is 5"):
        train_network(ds, split.train, other, checkpoint=tmp_path / "c.ckpt", resume=True)
    with pytest.raises(HashkitError, match="other data"):
        train_network(ds, split.train[1:], config, checkpoint=tmp_path / "c.ckpt", resume=True)
    with pytest.raises(HashkitError, match="no checkpoint"):
        train_network(ds, split.train, config, checkpoint=tmp_path / "none.ckpt", resume=True)


def test_the_epoch_log_goes_to_tensorboard_too(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ds = toy_dataset()
    split = toy_split(ds)
    _, losses = train_network(
        ds, split.train, TrainConfig(**TINY), epoch_log=tmp_path / "m.epochs.csv"
    )
    events = EventAccumulator(str(tmp_path / "m.tb")).Reload()
    logged = events.Scalars("train/loss")
    assert [e.step for e in logged] == [1, 2, 3]
    assert [e.value for e in logged] == pytest.approx(losses, rel=1e-6)
    assert len(events.Scalars("train/lr")) == 3


def test_validation_images_are_held_out_and_scored_every_epoch(tmp_path):
    from hashkit.train import train

    ds = toy_dataset(per_class=15)
    split = toy_split(ds)
    config = TrainConfig(**{**TINY, "val_images": 12})
    result = train(ds, split, config, epoch_log=tmp_path / "m.epochs.csv")
    rows = list(csv.DictReader(open(tmp_path / "m.epochs.csv")))
    assert len(rows) == 3 and all(0 < float(r["val_map"]) <= 1 for r in rows)
    assert result.bundle.train_config["val_images"] == 12


# ---- the command line, killed for real ----------------------------------------------------

TRAIN = ["train", "--bits", "8", "--epochs", "30", "--batch-size", "12", "--per-class", "4",
         "--rotation-steps", "10", "--no-augment", "--device", "cpu", "--val-images", "6",
         "-q"]  # fmt: skip


def _kill_after_first_checkpoint(cmd: list, checkpoint: Path, out: Path) -> None:
    """Start ``cmd`` and, once ``checkpoint`` appears, SIGKILL every process of the run (torchrun
    starts its workers in sessions of their own: they are found by ``out`` in their command
    line), as a pre-empted job is killed."""
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while not checkpoint.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and str(out).encode() in (entry / "cmdline").read_bytes():
                os.kill(int(entry.name), signal.SIGKILL)
        except (OSError, ProcessLookupError):
            pass  # gone already
    _, stderr = proc.communicate()
    assert checkpoint.exists() and not out.exists(), f"not killed mid-way: {stderr.decode()}"


def _same_bundle(a: Path, b: Path) -> None:
    x, y = load_bundle(a), load_bundle(b)
    assert x.state_dict.keys() == y.state_dict.keys()
    for name, value in x.state_dict.items():
        assert torch.equal(value, y.state_dict[name]), name
    assert np.array_equal(x.rotation, y.rotation)
    drop = {"train_seconds"}
    assert {k: v for k, v in x.metrics.items() if k not in drop} == {
        k: v for k, v in y.metrics.items() if k not in drop
    }
    assert x.train_config == y.train_config


@pytest.mark.parametrize("processes", [1, 2])
def test_a_killed_run_resumed_ends_with_the_bundle_of_an_uninterrupted_run(
    tmp_path, image_folder, processes, run_cli
):
    root, split = image_folder
    data = ["--data", root, "--split", split]

    def command(out: Path, *extra) -> list:
        args = [*TRAIN, *data, "--out", out, *extra]
        if processes == 1:
            return [sys.executable, "-m", "hashkit", *map(str, args)]
        return torchrun(["-m", "hashkit", *args])

    whole = tmp_path / "whole.pt"
    done = subprocess.run(command(whole), env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("wrote ") == 1  # rank 0 alone reports and writes
    assert not whole.with_suffix(".ckpt").exists()  # removed once the bundle is written

    out = tmp_path / "resumed.pt"
    _kill_after_first_checkpoint(command(out), out.with_suffix(".ckpt"), out)
    again = run_cli(*TRAIN, *data, "--out", out)  # would overwrite the unfinished run's state
    assert again.exit_code == 1 and "continue it with --resume" in again.stderr
    resumed = subprocess.run(
        command(out, "--resume"), env=ENV, capture_output=True, text=True, timeout=600
    )
    assert resumed.returncode == 0, resumed.stderr
    _same_bundle(whole, out)
    rows = list(csv.DictReader(open(tmp_path / "resumed.epochs.csv")))
    assert [int(r["epoch"]) for r in rows] == list(range(1, 31))
    reference = list(csv.DictReader(open(tmp_path / "whole.epochs.csv")))
    assert [r["loss"] for r in rows] == [r["loss"] for r in reference]
    assert [r["val_map"] for r in rows] == [r["val_map"] for r in reference]
    assert all(0 < float(r["val_map"]) <= 1 for r in rows)  # measured by rank 0, every epoch
