"""The faster training pipeline computes what the old one computed: given the old random
stream, it trains the same network up to float rounding.

The pipeline after draws its crops from a generator of its own (seeded by the training seed);
the one before drew them from torch's global generator, interleaved with dropout, plus one draw
per epoch that its DataLoader made. Here the new pipeline is run with torch's global generator
and that one extra draw per epoch, so that both consume the same random numbers in the same
order; then the two trained networks (``train_network``, default recipe, 2 epochs on 1,000
Fashion-MNIST training images, 1 thread) are compared weight by weight. They cannot agree bit
for bit: the triplets' values are the same, but backward sums their gradients in another
order (pairs x candidates instead of the B^3 cube), so the sums round differently.

    python benchmarks/speed/training_equivalence.py     # writes training_equivalence.json
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from versions import BEFORE, REPO, child_env, package_at  # noqa: E402


def child(out: str, old_stream: bool) -> None:
    import hashkit  # noqa: F401 - before torch, as the command line imports it

    # isort: split
    import torch

    import hashkit.train
    from hashkit.config import TrainConfig
    from hashkit.data import load_dataset, make_split
    from hashkit.train import train_network

    if old_stream:
        from hashkit.data.batches import TrainingBatches

        make = hashkit.train._training_batches

        class OldStream(TrainingBatches):
            def __iter__(self):
                torch.empty((), dtype=torch.int64).random_()  # the old DataLoader's draw
                return super().__iter__()

        def batches(*args, **kwargs):
            made = make(*args, **kwargs)
            made.__class__ = OldStream
            made.generator = None  # torch's global generator, as before
            return made

        hashkit.train._training_batches = batches
    torch.set_num_threads(1)
    ds = load_dataset("fashion-mnist")
    train = make_split(ds.labels, "reduced", 0).train[:1000]
    net, losses = train_network(ds, train, TrainConfig(epochs=2, device="cpu"))
    torch.save({"state": net.state_dict(), "losses": losses}, out)


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3] == "old-stream")
        return
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        before, after = Path(tmp) / "before.pt", Path(tmp) / "after.pt"
        for tree, out, stream in (
            (package_at(BEFORE, Path(tmp)), before, "own"),
            (REPO, after, "old-stream"),
        ):
            subprocess.run(
                [sys.executable, __file__, "--child", str(out), stream],
                env=child_env(tree),
                check=True,
            )
        a = torch.load(before, weights_only=True)
        b = torch.load(after, weights_only=True)
    difference = max(
        float((a["state"][k].double() - b["state"][k].double()).abs().max()) for k in a["state"]
    )
    scale = max(float(v.double().abs().max()) for v in a["state"].values() if v.is_floating_point())
    result = {
        "command": "python benchmarks/speed/training_equivalence.py",
        "before_commit": BEFORE,
        "tensors": len(a["state"]),
        "max_weight_difference": difference,
        "max_abs_weight": scale,
        "losses_before": a["losses"],
        "losses_after": b["losses"],
        "max_loss_difference": max(abs(x - y) for x, y in zip(a["losses"], b["losses"])),
    }
    (HERE / "training_equivalence.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
