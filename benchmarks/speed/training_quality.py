"""Equal quality: the default recipe trained with this tree's training pipeline, scored on the
validation split of benchmarks/tuning, against the committed runs of the pipeline before.

Each seed trains the recipe of the tuning trial ``margin1-crop-100-rs`` (margin loss alpha 1,
crops, 100 epochs, 32 bits; training seed 0, 1, 2 are the trials ``margin1-crop-100-rs``,
``-s1``, ``-s2``) with ``benchmarks/tuning/tune.py``'s own ``run_trial``, so everything but the
code under test is the same: the validation split, the four quantisers, the two scores.

Resumable: each finished seed is kept in training_quality/<version>/<trial>.json and skipped
when run again; ``--report`` only rewrites training_quality/README.md from what is there.
Versions: ``after`` (this tree) and ``same-seed`` (the first version of the new pipeline, whose
augmentation generator was seeded with the training seed itself, like torch's global
generator, so that the crops and the weights/dropout drew from one random stream).

    nice -n 5 python benchmarks/speed/training_quality.py --seeds 0,1,2 --threads 1
    python benchmarks/speed/training_quality.py --report
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
OUT = HERE / "training_quality"
TUNING = HERE.parent / "tuning"
BEFORE = "margin1-crop-100-rs"
SCORES = [
    ("val_map", "none", "seen sgn(h)"),
    ("val_map", "rs-itq", "seen RS from ITQ"),
    ("val_map_unseen", "none", "unseen sgn(h)"),
    ("val_map_unseen", "rs-itq", "unseen RS from ITQ"),
]


def trial_name(seed: int) -> str:
    return BEFORE if seed == 0 else f"{BEFORE}-s{seed}"


def run(seeds: list[int], version: str) -> None:
    sys.path.insert(0, str(TUNING))
    from tune import TRIALS, run_trial

    (OUT / version).mkdir(parents=True, exist_ok=True)
    for seed in seeds:
        name = trial_name(seed)
        out = OUT / version / f"{name}.json"
        if out.exists():
            continue
        overrides, search = TRIALS[name]
        result = run_trial(name, overrides, search)
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps(result, indent=1))
        tmp.replace(out)
        print(name, {k: round(v, 4) for k, v in result["val_map"].items()}, flush=True)


def _table(runs: dict[str, list[dict]]) -> str:
    lines = [
        "| pipeline | seeds | " + " | ".join(label for _, _, label in SCORES) + " | train s |",
        "|---|---|" + "---|" * len(SCORES) + "---|",
    ]
    for pipeline, results in runs.items():
        if not results:
            continue
        cells = []
        for key, variant, _ in SCORES:
            values = np.array([r[key][variant] for r in results])
            spread = f" ± {values.std(ddof=1):.3f}" if len(values) > 1 else ""
            cells.append(f"{values.mean():.3f}{spread}")
        seconds = np.median([r["train_seconds"] for r in results])
        seeds = ",".join(str(r["config"]["seed"]) for r in results)
        lines.append(f"| {pipeline} | {seeds} | " + " | ".join(cells) + f" | {seconds:.0f} |")
    return "\n".join(lines)


def _runs(version: str) -> list[dict]:
    paths = sorted((OUT / version).glob(f"{BEFORE}*.json"))
    return sorted((json.loads(p.read_text()) for p in paths), key=lambda r: r["config"]["seed"])


def _shipped_runs() -> list[dict]:
    """The tuning trials of the default recipe with the shipped code: this pipeline, its own
    augmentation stream and the class-balanced sampler after its fix (issue 9)."""
    paths = [TUNING / "runs" / f"{BEFORE}-s{s}-fixed-sampler.json" for s in range(3)]
    return [json.loads(p.read_text()) for p in paths if p.exists()]


def report() -> str:
    before = [json.loads((TUNING / "runs" / f"{trial_name(s)}.json").read_text()) for s in range(3)]
    versions = {
        "after": _runs("after"),
        "same-seed": _runs("same-seed"),
        "shipped (+ sampler fix)": _shipped_runs(),
    }
    paired = [
        "| version | seed | " + " | ".join(label for _, _, label in SCORES) + " |",
        "|---|---|" + "---|" * len(SCORES),
    ]
    for version, runs in versions.items():
        for r in runs:
            b = before[r["config"]["seed"]]
            paired.append(
                f"| {version} | {r['config']['seed']} | "
                + " | ".join(f"{r[k][v] - b[k][v]:+.4f}" for k, v, _ in SCORES)
                + " |"
            )
    return (
        "# Equal quality after the faster training pipeline\n\n"
        "Validation mAP (benchmarks/tuning's split: 1,000 validation queries carved from the "
        "reduced protocol's 5,000 training images; 32 bits, default recipe, 100 epochs), mean "
        "± standard deviation over training seeds. *before*: the committed tuning runs "
        f"`{BEFORE}`, `-s1`, `-s2` (the pipeline before, the class-balanced sampler as it was "
        "then); *after*: the same trials, same sampler, this tree's pipeline "
        "(`training_quality.py`); *same-seed*: the first version of the new pipeline, whose "
        "augmentation shared torch's global random stream; *shipped (+ sampler fix)*: the "
        f"tuning trials `{BEFORE}-s0-fixed-sampler` .. `-s2-...` (the pipeline with its own "
        "augmentation stream and the class-balanced sampler after its fix, "
        "benchmarks/tuning/README.md), so two changes at once.\n\n"
        + _table({"before": before, **versions})
        + "\n\nAfter minus before, paired by training seed:\n\n"
        + "\n".join(paired)
        + "\n\nThe augmentation now draws from its own seeded generator instead of torch's "
        "global one, so the crops differ from the runs before at the same seed: the "
        "comparison is between two draws of the same recipe, which is what the seed spread "
        "measures. `train s` is wall time on a shared 2-core machine (other jobs running), "
        "not a speed figure: see training.md.\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0", help="comma-separated training seeds (0-2)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--version", default="after", help="folder the runs go to")
    parser.add_argument("--report", action="store_true", help="only rewrite the README")
    args = parser.parse_args()
    if not args.report:
        import torch

        if args.threads:
            torch.set_num_threads(args.threads)
        run([int(s) for s in args.seeds.split(",") if s], args.version)
    (OUT / "README.md").write_text(report())


if __name__ == "__main__":
    main()
