"""The SDSH paper's comparison on Fashion-MNIST: losses x code lengths x quantisers.

Reduced protocol (METHOD.md section 4, split seed 0): 1,000 queries (100 per class), the
other 69,000 images are the database, 5,000 of them (500 per class) the training set. Each
run trains one network (the default recipe of ``hashkit train``, i.e. TrainConfig's
defaults, with the run's loss, bits and training seed) and scores four quantisers of the same
embeddings: no rotation, ITQ, random search from identity and random search from ITQ (R
learned on training images only, as ``hashkit train`` does). Reported per run: whole-database
mAP (ties by database order), tie-aware mAP, and the statistics of the database codes
(balance = mean |fraction of ones - 0.5|, mean absolute bit correlation, distinct codes).

Resumable: each finished run is written to runs/<run>.json and skipped when the script runs
again; several workers may run at once (a run is claimed with a lock file holding the
worker's pid; locks of dead workers are ignored). Every call ends by rewriting results.json,
README.md and map_vs_bits.png from whatever runs exist.

    python benchmarks/paper_table/run.py                # run what is missing, then report
    python benchmarks/paper_table/run.py --threads 1    # one of two workers side by side
    python benchmarks/paper_table/run.py --report       # only aggregate
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from resumable import run_claimed  # noqa: E402  (benchmarks/resumable.py, shared by the runners)

HERE = Path(__file__).resolve().parent
RUNS = HERE / "runs"

# The training recipe every row shares, pinned so that a later change of hashkit train's
# defaults (hashkit/config.py) cannot mix two recipes in one table.
TABLE_RECIPE = {"epochs": 60}
# row label in the table -> TrainConfig overrides of that row
LOSSES = {
    "spring": {"loss": "spring", "alpha": None},
    "margin (alpha 1)": {"loss": "margin", "alpha": 1.0},
    "likelihood": {"loss": "likelihood", "alpha": None},
    "margin (alpha 2)": {"loss": "margin", "alpha": 2.0},
    # hashkit train's default recipe (hashkit/config.py), which trains longer than the table
    "default: margin (alpha 1), 100 epochs": {"loss": "margin", "alpha": 1.0, "epochs": 100},
}
DEFAULT_ROW = "default: margin (alpha 1), 100 epochs"
# Every run records the sampler it trained with; runs without the field used the sampler
# before its fix (batches of about 6.5 classes instead of 10). Only the default row was run
# again after the fix; its earlier runs are kept as a row of their own.
SAMPLER = "exact class-balanced"
BEFORE_FIX_ROW = "default, before the sampler fix"
ROWS = [*(k for k in LOSSES if k != DEFAULT_ROW), BEFORE_FIX_ROW, DEFAULT_ROW]
QUANTISERS = {
    "none": ("none", "identity"),
    "itq": ("itq", "identity"),
    "rs-identity": ("random-search", "identity"),
    "rs-itq": ("random-search", "itq"),
}
QUANTISER_NAMES = {
    "none": "sgn(h)",
    "itq": "ITQ",
    "rs-identity": "RS from I",
    "rs-itq": "RS from ITQ",
}
ALL_BITS = (12, 16, 24, 32, 48)
SEEDS = (0, 1, 2)


def jobs() -> list[tuple[str, int, int]]:
    """(loss label, bits, seed) in the order they are run: what the claims and the quality
    bar rest on first (the default loss and the paper's, 12 and 32 bits, seed by seed)."""
    first = ["margin (alpha 1)", "spring"]
    out = [(loss, b, s) for s in SEEDS for b in (12, 32) for loss in first]
    out += [("likelihood", b, s) for s in SEEDS for b in (12, 32)]
    out += [(loss, b, 0) for b in (16, 24, 48) for loss in (*first, "likelihood")]
    out += [(DEFAULT_ROW, b, s) for s in SEEDS for b in (12, 32)]
    out += [("margin (alpha 2)", b, s) for s in SEEDS for b in (12, 32)]
    return out


def row_of(run: dict) -> str:
    """The table row of a finished run."""
    if run["loss"] == DEFAULT_ROW and run.get("sampler") != SAMPLER:
        return BEFORE_FIX_ROW
    return run["loss"]


def run_name(loss: str, bits: int, seed: int) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", loss.replace(" (alpha ", "-a")).strip("-")
    return f"{slug}-{bits}b-s{seed}"


def run_one(loss_label: str, bits: int, seed: int) -> dict:
    from hashkit.codes import code_statistics, sign_codes
    from hashkit.config import TrainConfig
    from hashkit.data import load_dataset, make_split
    from hashkit.metrics import evaluate_retrieval
    from hashkit.train import embed_dataset, learn_rotation, train_network

    ds = load_dataset("fashion-mnist")
    split = make_split(ds.labels, "reduced", 0)
    config = TrainConfig(bits=bits, seed=seed, **{**TABLE_RECIPE, **LOSSES[loss_label]})
    started = time.perf_counter()
    net, losses = train_network(ds, split.train, config)
    train_seconds = time.perf_counter() - started
    device = next(net.parameters()).device
    h_train = embed_dataset(net, ds, split.train, device)
    h_query = embed_dataset(net, ds, split.query, device)
    h_db = embed_dataset(net, ds, split.database, device)
    lt, lq, ldb = (ds.labels[i] for i in (split.train, split.query, split.database))
    results = {}
    for name, (rotation, init) in QUANTISERS.items():
        t = time.perf_counter()
        r, info = learn_rotation(
            h_train, lt, dataclasses.replace(config, rotation=rotation, rotation_init=init)
        )
        rotation_seconds = time.perf_counter() - t
        xq, xb = sign_codes(h_query, r), sign_codes(h_db, r)
        ev = evaluate_retrieval(xq, xb, lq, ldb, bits, top_k=(1000,), precision_ks=(100, 1000))
        results[name] = {
            "map": ev["map"],
            "tie_aware_map": ev["tie_aware_map"],
            "map_at_1000": ev["map_at"][1000],
            "precision_at_100": ev["precision_at"][100],
            "precision_radius2": ev["precision_radius2"],
            **code_statistics(xb, bits),
            "rotation_seconds": rotation_seconds,
            **info,
        }
    return {
        "loss": loss_label,
        "bits": bits,
        "seed": seed,
        "sampler": SAMPLER,
        "config": config.to_dict(),
        "protocol": {
            "name": "reduced",
            "split_seed": 0,
            "train": len(split.train),
            "query": len(split.query),
            "database": len(split.database),
        },
        "final_loss": losses[-1],
        "train_seconds": train_seconds,
        "quantisers": results,
    }


def run_missing(limit: int | None, log) -> None:
    RUNS.mkdir(exist_ok=True)
    done = 0
    for loss, bits, seed in jobs():
        if limit is not None and done >= limit:
            return
        name = run_name(loss, bits, seed)
        result = run_claimed(RUNS, name, partial(run_one, loss, bits, seed), log)
        if result is not None:
            log(f"{name}: " + str({k: round(v["map"], 4) for k, v in result["quantisers"].items()}))
            done += 1


def _mean_std(values: list[float]) -> dict:
    a = np.asarray(values, dtype=np.float64)
    return {
        "mean": float(a.mean()),
        "std": float(a.std(ddof=1)) if len(a) > 1 else None,
        "n": len(a),
        "values": a.tolist(),
    }


def aggregate() -> dict:
    runs = [json.loads(p.read_text()) for p in sorted(RUNS.glob("*.json"))]
    cells: dict = {}
    for r in runs:
        for q, m in r["quantisers"].items():
            cell = cells.setdefault((row_of(r), r["bits"], q), {})
            for key in ("map", "tie_aware_map", "balance", "bit_correlation", "distinct_codes"):
                cell.setdefault(key, []).append(m[key])
    from hashkit.config import TrainConfig

    default = TrainConfig()
    return {
        "dataset": "fashion-mnist",
        "protocol": "reduced (split seed 0): 1,000 queries, 69,000 database, 5,000 training",
        "recipe": {
            k: v
            for k, v in TrainConfig(**TABLE_RECIPE).to_dict().items()
            if k not in ("bits", "loss", "alpha", "seed", "rotation", "rotation_init")
        },
        "rows": {**LOSSES, BEFORE_FIX_ROW: LOSSES[DEFAULT_ROW]},
        "default": {
            "loss": default.loss,
            "alpha": default.alpha,
            "rotation": default.rotation,
            "rotation_init": default.rotation_init,
            "epochs": default.epochs,
        },
        "runs": len(runs),
        "cells": [
            {"loss": loss, "bits": bits, "quantiser": q, **{k: _mean_std(v) for k, v in c.items()}}
            for (loss, bits, q), c in sorted(cells.items(), key=lambda kv: (kv[0][0], kv[0][1]))
        ],
    }


def _fmt(stat: dict | None, digits: int = 3) -> str:
    if stat is None:
        return ""
    if stat["n"] == 1:
        return f"{stat['mean']:.{digits}f} (1 seed)"
    return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"


def _quantiser_table(title: str, index: dict, cell_text) -> list[str]:
    """A Markdown table, one row per (loss, bits) that has runs, one column per quantiser;
    ``cell_text`` formats one aggregated cell."""
    lines = [
        f"### {title}",
        "",
        "| loss | bits | " + " | ".join(QUANTISER_NAMES.values()) + " |",
        "|---|---|" + "---|" * len(QUANTISERS),
    ]
    for loss in ROWS:
        for bits in ALL_BITS:
            cells = [index.get((loss, bits, q)) for q in QUANTISERS]
            if any(cells):
                row = ["" if c is None else cell_text(c) for c in cells]
                lines.append(f"| {loss} | {bits} | " + " | ".join(row) + " |")
    return lines + [""]


def markdown(agg: dict) -> str:
    index = {(c["loss"], c["bits"], c["quantiser"]): c for c in agg["cells"]}
    lines = []
    for key, title in (
        ("map", "mAP, whole database (ties by database order)"),
        ("tie_aware_map", "Tie-aware mAP (He et al., CVPR 2018)"),
    ):
        lines += _quantiser_table(title, index, lambda c, key=key: _fmt(c[key]))
    lines += _quantiser_table(
        "Database codes: balance / mean |bit correlation| / distinct codes",
        index,
        lambda c: (
            f"{c['balance']['mean']:.3f} / {c['bit_correlation']['mean']:.3f} / "
            f"{c['distinct_codes']['mean']:.0f}"
        ),
    )
    return "\n".join(lines)


def _paired(runs: dict, a: str, b: str, bits: int, q: str) -> list[float]:
    """mAP of row a minus row b, seed by seed, over the seeds both have."""
    return [
        runs[(a, bits, s)]["quantisers"][q]["map"] - runs[(b, bits, s)]["quantisers"][q]["map"]
        for s in SEEDS
        if (a, bits, s) in runs and (b, bits, s) in runs
    ]


def _diffs(d: list[float]) -> str:
    if not d:
        return "no paired runs"
    if len(d) == 1:
        return f"{d[0]:+.3f} (1 seed)"
    wins = sum(x > 0 for x in d)
    return (
        f"{wins} of {len(d)} positive, mean {np.mean(d):+.3f}, range {min(d):+.3f} to {max(d):+.3f}"
    )


def _heading(title: str, columns: tuple[str, ...]) -> list[str]:
    """A bold title (up to its closing ``**``) and a Markdown table header."""
    return ["", f"**{title}", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]


def evidence() -> str:
    """The numbers the claims rest on, computed from runs/ (seed by seed, paired)."""
    runs = {}
    for p in sorted(RUNS.glob("*.json")):
        r = json.loads(p.read_text())
        runs[(row_of(r), r["bits"], r["seed"])] = r
    lines = ["Paired = same split, same training seed. mAP over the whole database."]
    lines += _heading(
        "Claim 1, spring vs the other losses** (spring minus the other, per seed):",
        ("other loss", "bits", "sgn(h)", "RS from I"),
    )
    for other in (k for k in ROWS if k != "spring"):
        for bits in (12, 32):
            cells = [
                _diffs(_paired(runs, "spring", other, bits, q)) for q in ("none", "rs-identity")
            ]
            lines.append(f"| {other} | {bits} | " + " | ".join(cells) + " |")
    lines += _heading(
        "Claims 2 and 3, the rotation's gain over sgn(h)** (per run, every seed and length):",
        ("loss", "bits", "runs", "ITQ", "RS from I", "RS from ITQ"),
    )
    for loss in ROWS:
        for bits in ALL_BITS:
            rs = [runs[(loss, bits, s)] for s in SEEDS if (loss, bits, s) in runs]
            if not rs:
                continue
            cells = []
            for q in ("itq", "rs-identity", "rs-itq"):
                d = [r["quantisers"][q]["map"] - r["quantisers"]["none"]["map"] for r in rs]
                cells.append(_diffs(d) if len(d) > 1 else f"{d[0]:+.3f}")
            lines.append(f"| {loss} | {bits} | {len(rs)} | " + " | ".join(cells) + " |")
    lines += _heading(
        "The sampler fix, default recipe** (after minus before, per seed):",
        ("bits", "sgn(h)", "ITQ", "RS from I", "RS from ITQ"),
    )
    for bits in (12, 32):
        cells = [_diffs(_paired(runs, DEFAULT_ROW, BEFORE_FIX_ROW, bits, q)) for q in QUANTISERS]
        lines.append(f"| {bits} | " + " | ".join(cells) + " |")
    lines += _heading(
        "Claim 4, balance of the database codes** (range over runs and quantisers):",
        ("loss", "runs", "balance (0 = balanced)", "mean abs. bit correlation"),
    )
    for loss in ROWS:
        ms = [m for (l, _, _), r in runs.items() if l == loss for m in r["quantisers"].values()]
        if not ms:
            continue
        n = sum(1 for k in runs if k[0] == loss)
        bal = [m["balance"] for m in ms]
        cor = [m["bit_correlation"] for m in ms]
        lines.append(
            f"| {loss} | {n} | {min(bal):.3f} to {max(bal):.3f} | "
            f"{min(cor):.3f} to {max(cor):.3f} |"
        )
    return "\n".join(lines) + "\n"


def status() -> str:
    names = [run_name(*j) for j in jobs()]
    done = [n for n in names if (RUNS / f"{n}.json").exists()]
    missing = [n for n in names if n not in done]
    text = f"{len(done)} of {len(names)} runs finished."
    if missing:
        text += (
            " Missing (run the script again to add them; nothing else to change): "
            + ", ".join(missing)
            + "."
        )
    return text + " Cells with one finished seed say so; a single seed is not evidence.\n"


def update_readme(sections: dict[str, str]) -> None:
    """Replace the text between ``<!-- begin NAME -->`` and ``<!-- end NAME -->`` in
    README.md for each section; the prose around them is written by hand."""
    path = HERE / "README.md"
    text = path.read_text()
    for name, body in sections.items():
        begin, end = f"<!-- begin {name} -->", f"<!-- end {name} -->"
        i, j = text.find(begin), text.find(end)
        if i < 0 or j < i:
            raise SystemExit(f"error: {path} lacks the markers {begin} ... {end}")
        text = text[: i + len(begin)] + "\n" + body.strip("\n") + "\n" + text[j:]
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def plot(agg: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    index = {(c["loss"], c["bits"], c["quantiser"]): c for c in agg["cells"]}
    fig, axes = plt.subplots(1, len(QUANTISERS), figsize=(4 * len(QUANTISERS), 3.6), sharey=True)
    for ax, q in zip(axes, QUANTISERS):
        for loss in ROWS:
            pts = [(b, index[(loss, b, q)]["map"]) for b in ALL_BITS if (loss, b, q) in index]
            if not pts:
                continue
            bits = [b for b, _ in pts]
            mean = [s["mean"] for _, s in pts]
            std = [s["std"] or 0.0 for _, s in pts]
            ax.errorbar(bits, mean, yerr=std, marker="o", capsize=3, label=loss)
        ax.set_title(QUANTISER_NAMES[q])
        ax.set_xlabel("bits")
        ax.set_xticks(ALL_BITS)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("mAP (whole database)")
    axes[0].legend(fontsize=8)
    fig.suptitle("Fashion-MNIST, reduced protocol (error bars: std over seeds, where several)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report() -> dict:
    agg = aggregate()
    (HERE / "results.json").write_text(json.dumps(agg, indent=1))
    table = markdown(agg)
    (HERE / "table.md").write_text(table)
    if agg["cells"]:
        plot(agg, HERE / "map_vs_bits.png")
    update_readme({"status": status(), "results": table, "evidence": evidence()})
    return agg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    parser.add_argument("--limit", type=int, default=None, help="stop after this many runs")
    parser.add_argument("--report", action="store_true", help="only aggregate what exists")
    args = parser.parse_args()
    if not args.report:
        import torch

        if args.threads:
            torch.set_num_threads(args.threads)
        run_missing(args.limit, lambda m: print(m, flush=True))
    agg = write_report()
    print(f"{agg['runs']} runs aggregated into {HERE / 'results.json'}")


if __name__ == "__main__":
    main()
