"""SDSH against the field's baselines on Fashion-MNIST, every method trained the same way, on
the seen-class (reduced) and unseen-class protocols.

Rows: hashkit's default recipe (SDSH, margin loss, random search from ITQ), the SDSH paper's
recipe (spring loss, random search from identity) and the baselines DPSH, DSH, HashNet, DTSH,
GreedyHash, CSQ and OrthoHash (hashkit.methods; docs/baselines.md), each with its paper's loss,
head and binarisation (sgn(h)), and also with hashkit's rotation. Every row shares the data,
split, small CNN, class-balanced sampler, crop augmentation, epochs, batch and optimiser;
only the learning rate is chosen per row, from a small grid, on a validation split carved
from the training images (never on queries).

Resumable: each finished run is written to <out>/runs/<run>.json and skipped when the script
runs again; several workers may run at once (a run is claimed with a lock file holding the
worker's pid; locks of dead workers are ignored). A row's table runs wait for its learning-
rate trials. Every call ends by rewriting the report from whatever runs exist.

    python benchmarks/baselines/run.py                # the real table: run what is missing
    python benchmarks/baselines/run.py --threads 1    # one of two workers side by side
    python benchmarks/baselines/run.py --report       # only rewrite the report
    python benchmarks/baselines/run.py --smoke        # 2 epochs, 12 and 32 bits, seed 0, into
                                                      # smoke/: proves the runner, not results
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

# row label -> TrainConfig overrides of that row
ROWS = {
    "SDSH default": {"method": "sdsh", "loss": "margin", "alpha": 1.0},
    "SDSH spring (paper)": {"method": "sdsh", "loss": "spring", "alpha": None},
    "DPSH": {"method": "dpsh"},
    "DSH": {"method": "dsh"},
    "HashNet": {"method": "hashnet"},
    "DTSH": {"method": "dtsh"},
    "GreedyHash": {"method": "greedyhash"},
    "CSQ": {"method": "csq"},
    "OrthoHash": {"method": "orthohash"},
}
SDSH_ROWS = ("SDSH default", "SDSH spring (paper)")
# How R in sgn(R h) is chosen: (rotation, rotation_init) of TrainConfig.
QUANTISERS = {
    "sgn": ("none", "identity"),
    "rs-itq": ("random-search", "itq"),
    "rs-identity": ("random-search", "identity"),
}
QUANTISER_NAMES = {"sgn": "sgn(h)", "rs-itq": "RS from ITQ", "rs-identity": "RS from I"}
# Each row's own binarisation: the baselines' papers use sgn(h); hashkit's default searches
# from ITQ, the SDSH paper from identity.
OWN = {row: "sgn" for row in ROWS} | {
    "SDSH default": "rs-itq",
    "SDSH spring (paper)": "rs-identity",
}
PROTOCOLS = {"seen": "reduced", "unseen": "unseen"}
SPLIT_SEED = 0

# The recipe every row shares, pinned so a later change of hashkit train's defaults cannot mix
# two recipes in one table. The batch holds PER_CLASS images of each of up to 10 classes: 10
# classes on the seen protocol, the 7 seen classes on the unseen one.
RECIPE = {"epochs": 100, "per_class": 10, "augment": "crop", "weight_decay": 1e-4}
PER_BATCH_CLASSES = 10
LR_GRID = (3e-4, 1e-3, 3e-3)
LR_BITS = 32


@dataclasses.dataclass(frozen=True)
class Plan:
    """What one invocation runs: the full table, or the smoke run that proves the runner."""

    out: Path
    bits: tuple[int, ...]
    seeds: dict[int, tuple[int, ...]]  # bits -> training seeds
    recipe: dict
    smoke: bool

    @property
    def runs(self) -> Path:
        return self.out / "runs"


FULL = Plan(
    out=HERE,
    bits=(12, 24, 32, 48),
    seeds={12: (0, 1, 2), 24: (0,), 32: (0, 1, 2), 48: (0,)},
    recipe=RECIPE,
    smoke=False,
)
SMOKE = Plan(
    out=HERE / "smoke",
    bits=(12, 32),
    seeds={12: (0,), 32: (0,)},
    recipe={**RECIPE, "epochs": 2, "rotation_steps": 50},
    smoke=True,
)


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def lr_name(row: str, lr: float) -> str:
    return f"lr-{slug(row)}-{lr:g}"


def run_name(row: str, protocol: str, bits: int, seed: int) -> str:
    return f"{slug(row)}-{protocol}-{bits}b-s{seed}"


def lr_jobs(plan: Plan) -> list[tuple[str, float]]:
    return [(row, lr) for row in ROWS for lr in LR_GRID]


def table_jobs(plan: Plan) -> list[tuple[str, str, int, int]]:
    """(row, protocol, bits, seed) in the order they are run: seed 0 at every length first,
    then the other seeds."""
    out = []
    for seed in sorted({s for seeds in plan.seeds.values() for s in seeds}):
        for bits in plan.bits:
            if seed in plan.seeds[bits]:
                out += [(row, p, bits, seed) for p in PROTOCOLS for row in ROWS]
    return out


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def chosen_lr(plan: Plan, row: str) -> tuple[float | None, dict]:
    """The learning rate of ``row`` (best validation mAP of its own binarisation; the smaller
    rate on a tie) and every trial's score, or None while a trial is missing."""
    scores = {}
    for lr in LR_GRID:
        trial = _read(plan.runs / f"{lr_name(row, lr)}.json")
        if trial is None:
            return None, scores
        scores[lr] = trial["validation_map"]
    best = max(LR_GRID, key=lambda lr: (scores[lr], -lr))
    return best, scores


def _config(plan: Plan, row: str, bits: int, seed: int, lr: float, classes: int):
    from hashkit.config import TrainConfig

    batch = plan.recipe["per_class"] * min(PER_BATCH_CLASSES, classes)
    return TrainConfig(bits=bits, seed=seed, lr=lr, batch_size=batch, **plan.recipe, **ROWS[row])


def _quantise(config, h_train, l_train, quantisers):
    """{quantiser: (R, rotation seconds, search info)} learned on the training embeddings."""
    from hashkit.train import learn_rotation

    out = {}
    for q in quantisers:
        rotation, init = QUANTISERS[q]
        started = time.perf_counter()
        r, info = learn_rotation(
            h_train, l_train, dataclasses.replace(config, rotation=rotation, rotation_init=init)
        )
        out[q] = (r, time.perf_counter() - started, info)
    return out


def validation_split(labels: np.ndarray, per_class: int = 100, seed: int = 1234):
    """(train, validation queries): 100 images per class held out of the reduced protocol's
    training set (as benchmarks/tuning does); the rest trains and is the validation
    database."""
    from hashkit.data import make_split

    train = make_split(labels, "reduced", SPLIT_SEED).train
    rng = np.random.default_rng(seed)
    held = np.concatenate(
        [rng.choice(train[labels[train] == c], per_class, replace=False) for c in np.unique(labels)]
    )
    return np.setdiff1d(train, held), np.sort(held)


def run_lr_trial(plan: Plan, row: str, lr: float) -> dict:
    from hashkit.codes import sign_codes
    from hashkit.data import load_dataset
    from hashkit.metrics import mean_average_precision
    from hashkit.train import embed_dataset, train_network

    run_started = time.perf_counter()
    ds = load_dataset("fashion-mnist")
    train_idx, val_idx = validation_split(ds.labels)
    config = _config(plan, row, LR_BITS, 0, lr, len(np.unique(ds.labels[train_idx])))
    started = time.perf_counter()
    net, losses = train_network(ds, train_idx, config)
    train_seconds = time.perf_counter() - started
    device = next(net.parameters()).device
    h_train = embed_dataset(net, ds, train_idx, device)
    h_val = embed_dataset(net, ds, val_idx, device)
    lt, lv = ds.labels[train_idx], ds.labels[val_idx]
    (r, _, _) = _quantise(config, h_train, lt, [OWN[row]])[OWN[row]]
    score = mean_average_precision(sign_codes(h_val, r), sign_codes(h_train, r), lv, lt, LR_BITS)
    return {
        "row": row,
        "lr": lr,
        "bits": LR_BITS,
        "binarisation": OWN[row],
        "validation_map": score,
        "validation": {"queries": len(val_idx), "database": len(train_idx)},
        "config": config.to_dict(),
        "final_loss": losses[-1],
        "train_seconds": train_seconds,
        "run_seconds": time.perf_counter() - run_started,
        "smoke": plan.smoke,
    }


def run_one(plan: Plan, row: str, protocol: str, bits: int, seed: int, lr: float) -> dict:
    from hashkit.codes import code_statistics, sign_codes
    from hashkit.data import load_dataset, make_split
    from hashkit.metrics import evaluate_retrieval
    from hashkit.train import embed_dataset, train_network

    run_started = time.perf_counter()
    ds = load_dataset("fashion-mnist")
    split = make_split(ds.labels, PROTOCOLS[protocol], SPLIT_SEED)
    lt, lq, ldb = (ds.labels[i] for i in (split.train, split.query, split.database))
    config = _config(plan, row, bits, seed, lr, len(np.unique(lt)))
    started = time.perf_counter()
    net, losses = train_network(ds, split.train, config)
    train_seconds = time.perf_counter() - started
    device = next(net.parameters()).device
    h_train = embed_dataset(net, ds, split.train, device)
    h_query = embed_dataset(net, ds, split.query, device)
    h_db = embed_dataset(net, ds, split.database, device)
    quantisers = dict.fromkeys(["sgn", "rs-itq", OWN[row]])
    results = {}
    for q, (r, seconds, info) in _quantise(config, h_train, lt, quantisers).items():
        xq, xb = sign_codes(h_query, r), sign_codes(h_db, r)
        ev = evaluate_retrieval(xq, xb, lq, ldb, bits, top_k=(1000,), precision_ks=(100, 1000))
        results[q] = {
            "map": ev["map"],
            "tie_aware_map": ev["tie_aware_map"],
            "map_at_1000": ev["map_at"][1000],
            "precision_at_100": ev["precision_at"][100],
            **code_statistics(xb, bits),
            "rotation_seconds": seconds,
            **info,
        }
        if q == OWN[row]:  # the curves of the figure, for the row's own binarisation
            results[q]["pr_curve"] = ev["pr_curve"]
            results[q]["precision_curve"] = ev["precision_curve"]
    return {
        "row": row,
        "protocol": protocol,
        "bits": bits,
        "seed": seed,
        "lr": lr,
        "own": OWN[row],
        "split": {
            "protocol": split.protocol,
            "split_seed": SPLIT_SEED,
            "unseen_classes": split.unseen_classes,
            "train": len(split.train),
            "query": len(split.query),
            "database": len(split.database),
        },
        "config": config.to_dict(),
        "final_loss": losses[-1],
        "train_seconds": train_seconds,
        "run_seconds": time.perf_counter() - run_started,
        "quantisers": results,
        "smoke": plan.smoke,
    }


def run_missing(plan: Plan, limit: int | None, log) -> None:
    plan.runs.mkdir(parents=True, exist_ok=True)
    done = 0
    for row, lr in lr_jobs(plan):
        if limit is not None and done >= limit:
            return
        done += (
            run_claimed(plan.runs, lr_name(row, lr), partial(run_lr_trial, plan, row, lr), log)
            is not None
        )
    for row, protocol, bits, seed in table_jobs(plan):
        if limit is not None and done >= limit:
            return
        lr, _ = chosen_lr(plan, row)
        if lr is None:  # another worker is still choosing this row's learning rate
            continue
        work = partial(run_one, plan, row, protocol, bits, seed, lr)
        done += run_claimed(plan.runs, run_name(row, protocol, bits, seed), work, log) is not None


# -- the report ---------------------------------------------------------------------------


def load_runs(plan: Plan) -> dict:
    """{(row, protocol, bits, seed): run} of every finished table run."""
    runs = {}
    for path in sorted(plan.runs.glob("*.json")):
        run = _read(path)
        if run is not None and "quantisers" in run:
            runs[(run["row"], run["protocol"], run["bits"], run["seed"])] = run
    return runs


def _stat(values: list[float]) -> dict:
    a = np.asarray(values, dtype=np.float64)
    return {
        "mean": float(a.mean()),
        "std": float(a.std(ddof=1)) if len(a) > 1 else None,
        "n": len(a),
        "values": a.tolist(),
    }


METRICS = ("map", "tie_aware_map", "map_at_1000", "distinct_codes")


def aggregate(plan: Plan, runs: dict) -> dict:
    cells = {}
    for (row, protocol, bits, _), run in runs.items():
        for q, m in run["quantisers"].items():
            cell = cells.setdefault((row, protocol, bits, q), {k: [] for k in METRICS})
            for k in METRICS:
                cell[k].append(m[k])
    return {
        "smoke": plan.smoke,
        "dataset": "fashion-mnist",
        "protocols": {
            "seen": "reduced (split seed 0): 1,000 queries, 69,000 database, 5,000 training",
            "unseen": "unseen (split seed 0): 3 unseen classes drawn by the seed; 300 queries "
            "and 20,700 database images of those, 3,500 training images of the 7 others",
        },
        "recipe": plan.recipe,
        "lr_grid": list(LR_GRID),
        "lr": {row: dict(zip(("chosen", "scores"), chosen_lr(plan, row))) for row in ROWS},
        "runs": len(runs),
        "cells": [
            {
                "row": r,
                "protocol": p,
                "bits": b,
                "quantiser": q,
                **{k: _stat(v) for k, v in c.items()},
            }
            for (r, p, b, q), c in sorted(cells.items())
        ],
    }


def _index(agg: dict) -> dict:
    return {(c["row"], c["protocol"], c["bits"], c["quantiser"]): c for c in agg["cells"]}


def _fmt(stat: dict | None, digits: int = 3) -> str:
    if stat is None:
        return ""
    if stat["n"] == 1:
        return f"{stat['mean']:.{digits}f}"
    return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f} ({stat['n']})"


def _table(plan: Plan, index: dict, protocol: str, metric: str, quantiser=None) -> list[str]:
    """Rows x bits; ``quantiser`` None for each row's own binarisation."""
    lines = ["| method | " + " | ".join(f"{b} bits" for b in plan.bits) + " |"]
    lines.append("|---|" + "---|" * len(plan.bits))
    for row in ROWS:
        q = quantiser or OWN[row]
        cells = [index.get((row, protocol, b, q)) for b in plan.bits]
        if any(cells):
            digits = 0 if metric == "distinct_codes" else 3
            text = [_fmt(c[metric], digits) if c else "" for c in cells]
            label = row if quantiser else f"{row}, {QUANTISER_NAMES[q]}"
            lines.append(f"| {label} | " + " | ".join(text) + " |")
    return lines + [""]


def markdown(plan: Plan, agg: dict) -> str:
    index = _index(agg)
    if agg["runs"]:
        lines = ["Cells: mean ± standard deviation (seeds) where several seeds ran, else one run."]
    else:
        lines = ["No table run has finished yet; the learning-rate trials so far are below."]
    lines.append("")
    for protocol in PROTOCOLS if agg["runs"] else ():
        for metric, title in (
            ("map", "mAP, whole database (ties by database order)"),
            ("tie_aware_map", "Tie-aware mAP (He et al., CVPR 2018)"),
            ("map_at_1000", "mAP@1000"),
            ("distinct_codes", "Distinct database codes"),
        ):
            lines += [f"### {protocol} classes: {title}, each method's own binarisation", ""]
            lines += _table(plan, index, protocol, metric)
        lines += [f"### {protocol} classes: mAP with hashkit's rotation (RS from ITQ) for all", ""]
        lines += _table(plan, index, protocol, "map", "rs-itq")
    lines += ["### Learning rate chosen on the validation split (validation mAP per rate)", ""]
    lines += ["| method | " + " | ".join(f"{lr:g}" for lr in LR_GRID) + " | chosen |"]
    lines += ["|---|" + "---|" * (len(LR_GRID) + 1)]
    for row, entry in agg["lr"].items():
        scores = [entry["scores"].get(lr) for lr in LR_GRID]
        text = ["" if s is None else f"{s:.3f}" for s in scores]
        chosen = "" if entry["chosen"] is None else f"{entry['chosen']:g}"
        lines.append(f"| {row} | " + " | ".join(text) + f" | {chosen} |")
    return "\n".join(lines) + "\n"


def where_sdsh_loses(plan: Plan, agg: dict) -> str:
    """Every (protocol, bits) where a baseline's mean mAP (its own binarisation) is at least
    hashkit's default's, computed from the runs."""
    index = _index(agg)
    found, compared = [], 0
    for protocol in PROTOCOLS:
        for bits in plan.bits:
            ours = index.get(("SDSH default", protocol, bits, OWN["SDSH default"]))
            if ours is None:
                continue
            for row in ROWS:
                theirs = index.get((row, protocol, bits, OWN[row]))
                if row in SDSH_ROWS or theirs is None:
                    continue
                compared += 1
                if theirs["map"]["mean"] >= ours["map"]["mean"]:
                    found.append(
                        f"- {protocol} classes, {bits} bits: {row} {theirs['map']['mean']:.3f} "
                        f">= SDSH default {ours['map']['mean']:.3f}"
                    )
    if not compared:
        return "No cell holds both hashkit's default and a baseline yet.\n"
    if not found:
        return (
            f"In the {compared} (protocol, bits, baseline) comparisons so far, hashkit's "
            "default has the higher mean mAP every time.\n"
        )
    return "Cells where a baseline matches or beats hashkit's default (mean mAP):\n\n" + (
        "\n".join(found) + "\n"
    )


def timing(plan: Plan, runs: dict) -> str:
    """Median training seconds per epoch and whole-run seconds of each row, per protocol."""
    lines = [
        f"Measured in the {'smoke' if plan.smoke else 'table'} runs (median over runs; "
        "training seconds per epoch, and whole run: training, encoding, rotations, scoring):",
        "",
        "| method | " + " | ".join(f"{p}: s/epoch | {p}: s/run" for p in PROTOCOLS) + " |",
        "|---|" + "---|---|" * len(PROTOCOLS),
    ]
    for row in ROWS:
        cells = []
        for protocol in PROTOCOLS:
            mine = [r for (rw, p, _, _), r in runs.items() if rw == row and p == protocol]
            per_epoch = [r["train_seconds"] / r["config"]["epochs"] for r in mine]
            whole = [r["run_seconds"] for r in mine if "run_seconds" in r]
            cells += [f"{np.median(v):.0f}" if v else "" for v in (per_epoch, whole)]
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def status(plan: Plan) -> str:
    names = [lr_name(*j) for j in lr_jobs(plan)] + [run_name(*j) for j in table_jobs(plan)]
    done = [n for n in names if (plan.runs / f"{n}.json").exists()]
    text = f"{len(done)} of {len(names)} runs finished ({len(lr_jobs(plan))} learning-rate trials"
    text += f" and {len(table_jobs(plan))} table runs)."
    if not plan.smoke and len(done) < len(names):
        table = [j for j in table_jobs(plan) if (plan.runs / f"{run_name(*j)}.json").exists()]
        cells = {j[:3] for j in table_jobs(plan)}
        ran = {j[:3] for j in table}
        full = {c for c in cells if all(j in table for j in table_jobs(plan) if j[:3] == c)}
        text += (
            f" **The table is not finished:** {len(table)} table runs; {len(ran)} of its"
            f" {len(cells)} cells have a run and {len(full)} have every seed they are to have"
            " (cells show the mean and spread of the seeds run so far)."
            if table
            else " **The real table has not been run: no result here yet.**"
        )
    return text + "\n"


def plot_map_vs_bits(plan: Plan, agg: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hashkit.plots import save_figure

    index = _index(agg)
    fig, axes = plt.subplots(1, len(PROTOCOLS), figsize=(11, 4.2), sharey=True)
    for ax, protocol in zip(axes, PROTOCOLS):
        for row in ROWS:
            pts = [(b, index[(row, protocol, b, OWN[row])]["map"]) for b in plan.bits
                   if (row, protocol, b, OWN[row]) in index]  # fmt: skip
            if pts:
                ax.errorbar(
                    [b for b, _ in pts],
                    [s["mean"] for _, s in pts],
                    yerr=[s["std"] or 0.0 for _, s in pts],
                    marker="o" if row in SDSH_ROWS else ".",
                    linewidth=2.2 if row in SDSH_ROWS else 1.0,
                    capsize=3,
                    label=row,
                )
        ax.set(title=f"{protocol} classes", xlabel="bits", xticks=plan.bits)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("mAP (whole database)")
    axes[-1].legend(fontsize=7, loc="lower right")
    fig.suptitle(_figure_title(plan, "mAP vs code length, each method's own binarisation"))
    fig.tight_layout()
    save_figure(fig, path)


def plot_unseen_vs_seen(plan: Plan, agg: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hashkit.plots import save_figure

    index = _index(agg)
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for row in ROWS:
        pts = [
            (index[(row, "seen", b, OWN[row])]["map"]["mean"],
             index[(row, "unseen", b, OWN[row])]["map"]["mean"], b)
            for b in plan.bits
            if (row, "seen", b, OWN[row]) in index and (row, "unseen", b, OWN[row]) in index
        ]  # fmt: skip
        if pts:
            xs, ys = [p[0] for p in pts], [p[1] for p in pts]
            line = ax.plot(xs, ys, marker="o", linestyle="none", label=row)[0]
            for x, y, b in pts:
                ax.annotate(str(b), (x, y), fontsize=6, color=line.get_color())
    ax.plot([0, 1], [0, 1], color="grey", linewidth=0.8, linestyle="--")
    ax.set(xlabel="mAP, seen classes", ylabel="mAP, unseen classes", xlim=(0, 1), ylim=(0, 1))
    ax.set_title(_figure_title(plan, "unseen vs seen classes (points: bits)"), fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)


def plot_curves(plan: Plan, runs: dict, path: Path, bits: int = 32, seed: int = 0) -> bool:
    """Precision-recall and P@k of every method (own binarisation, ``bits``, ``seed``), one
    row of panels per protocol; False when no run has them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hashkit.plots import draw_pr_curves, draw_precision_curves, save_figure

    fig, axes = plt.subplots(len(PROTOCOLS), 2, figsize=(10, 4 * len(PROTOCOLS)), squeeze=False)
    drawn = False
    for (ax_pr, ax_p), protocol in zip(axes, PROTOCOLS):
        curves = [
            (row, runs[(row, protocol, bits, seed)]["quantisers"][OWN[row]])
            for row in ROWS
            if (row, protocol, bits, seed) in runs
        ]
        drawn = drawn or bool(curves)
        draw_pr_curves(ax_pr, curves)
        draw_precision_curves(ax_p, curves)
        ax_pr.set_title(f"{protocol} classes: precision-recall", fontsize=9)
        ax_p.set_title(f"{protocol} classes: precision@k", fontsize=9)
    fig.suptitle(_figure_title(plan, f"{bits} bits, seed {seed}"))
    fig.tight_layout()
    if drawn:
        save_figure(fig, path)
    else:
        plt.close(fig)
    return drawn


def _figure_title(plan: Plan, text: str) -> str:
    prefix = "SMOKE RUN (2 epochs), NOT RESULTS: " if plan.smoke else "Fashion-MNIST: "
    return prefix + text


def update_readme(path: Path, sections: dict[str, str]) -> None:
    """Replace the text between ``<!-- begin NAME -->`` and ``<!-- end NAME -->`` in the
    README for each section; the prose around them is written by hand."""
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


def write_report(plan: Plan) -> dict:
    runs = load_runs(plan)
    agg = aggregate(plan, runs)
    plan.out.mkdir(parents=True, exist_ok=True)
    (plan.out / "results.json").write_text(json.dumps(agg, indent=1))
    table = markdown(plan, agg)
    banner = "**SMOKE RUN: 2 epochs, proves the runner end to end; these are not results.**\n\n"
    (plan.out / "table.md").write_text((banner if plan.smoke else "") + table)
    if agg["cells"]:
        plot_map_vs_bits(plan, agg, plan.out / "map_vs_bits.png")
        plot_unseen_vs_seen(plan, agg, plan.out / "unseen_vs_seen.png")
        plot_curves(plan, runs, plan.out / "curves.png")
    update_readme(
        plan.out / "README.md",
        {"status": status(plan), "results": table, "verdict": where_sdsh_loses(plan, agg)},
    )
    if runs:  # the real table's README quotes the measured times (the smoke's until then)
        real_runs = load_runs(FULL)
        if plan.smoke == (not real_runs):
            update_readme(HERE / "README.md", {"timing": timing(plan, runs)})
    return agg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    parser.add_argument("--limit", type=int, default=None, help="stop after this many runs")
    parser.add_argument("--report", action="store_true", help="only rewrite the report")
    parser.add_argument("--smoke", action="store_true", help="the smoke run, into smoke/")
    args = parser.parse_args()
    plan = SMOKE if args.smoke else FULL
    if not args.report:
        import torch

        if args.threads:
            torch.set_num_threads(args.threads)
        run_missing(plan, args.limit, lambda m: print(m, flush=True))
    agg = write_report(plan)
    print(f"{agg['runs']} table runs aggregated into {plan.out / 'results.json'}")


if __name__ == "__main__":
    main()
