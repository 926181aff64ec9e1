"""Where the time of one data-parallel training step goes on the CPU (companion of ddp.py).

One training step of the small CNN (32 bits, margin loss, Adam) on a fixed batch of 100
28x28 images, timed over 50 steps after 10 of warm-up: one process on the whole batch and
on half of it, then 2 processes (torchrun, gloo, 1 thread each) that each take half, with
the parts of hashkit's data-parallel step switched on one at a time: DDP's gradient
all-reduce alone (plain batch norms, no gathering), + the gathered embeddings, + the batch
norms over the global batch (what `hashkit train` does).

Writes results/ddp_step.json and .md. Run (about 2 minutes):

    python benchmarks/scale/ddp_step.py
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODES = {
    "ddp": "2 processes: DDP's gradient all-reduce only (local batch norms, per-rank loss)",
    "gather": "2 processes: + embeddings gathered (the loss over the global batch)",
    "global-bn": "2 processes: + batch norms over the global batch (hashkit train)",
}


def step_time(mode: str, n: int = 100) -> float:
    """ms per step in this process (mode "one": no process group, ``n`` images)."""
    import torch

    import hashkit  # noqa: F401  (OpenMP threads sleep while they wait)
    from hashkit import distributed
    from hashkit.config import TrainConfig
    from hashkit.methods import make_method_loss
    from hashkit.models import HashNet, NetworkConfig

    torch.manual_seed(0)
    net = HashNet(NetworkConfig(bits=32, input_size=28, channels=1, mean=[0.0], std=[1.0]))
    labels = torch.arange(10).repeat_interleave(10)
    x = torch.randn(100, 1, 28, 28)
    loss_fn = make_method_loss(TrainConfig(bits=32), labels.numpy())
    optimiser = torch.optim.Adam(net.parameters(), 1e-3)
    model, part = net, slice(0, n)
    if mode != "one":
        rank, world = distributed.rank_and_world()
        if mode == "global-bn":
            distributed.sync_batch_norms(net, "cpu")
        model = torch.nn.parallel.DistributedDataParallel(net)
        part = distributed.shard(100, rank, world)
    for i in range(60):
        if i == 10:
            started = time.perf_counter()
        h, y = model(x[part]), labels[part]
        if mode in ("gather", "global-bn"):
            h, y = distributed.gather_batch(h), distributed.gather_labels(y)
        loss = loss_fn(h, y)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return (time.perf_counter() - started) / 50 * 1000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--rank":  # one rank of a torchrun launch
        from hashkit import distributed

        with distributed.process_group() as (rank, _):
            ms = step_time(sys.argv[2])
            if rank == 0:
                print(json.dumps({"ms": ms}))
        return
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    rows = []
    for n in (100, 50):
        one = subprocess.run(
            [sys.executable, "-c", f"import sys; sys.path.insert(0, {str(HERE)!r}); "
             f"import ddp_step; print(ddp_step.step_time('one', {n}))"],
            env=env, capture_output=True, text=True, check=True,
        )  # fmt: skip
        label = f"1 process, {n} images" + (" (the whole batch)" if n == 100 else " (a half)")
        rows.append({"run": label, "ms_per_step": float(one.stdout.split()[-1])})
    for mode, label in MODES.items():
        done = subprocess.run(
            [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
             "--master-addr", "127.0.0.1", "--master-port", str(free_port()),
             str(Path(__file__)), "--rank", mode],
            env=env, capture_output=True, text=True, check=True,
        )  # fmt: skip
        rows.append({"run": label, "ms_per_step": json.loads(done.stdout.strip())["ms"]})
    out = HERE / "results"
    result = {
        "command": "python benchmarks/scale/ddp_step.py",
        "load": os.getloadavg(),
        "rows": rows,
    }
    (out / "ddp_step.json").write_text(json.dumps(result, indent=1) + "\n")
    lines = [
        "# One data-parallel step on the CPU: where the time goes",
        "",
        f"Command: `{result['command']}` (1 thread per process); load average "
        f"{result['load'][0]:.1f}. Small CNN, 32 bits, margin loss, Adam, a batch of 100 "
        "28x28 images; mean over 50 steps after 10 of warm-up.",
        "",
        "| run | ms per step |",
        "|---|---|",
        *[f"| {r['run']} | {r['ms_per_step']:.1f} |" for r in rows],
    ]
    (out / "ddp_step.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
