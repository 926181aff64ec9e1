"""Issue 10, target 1: the rotation search's candidate score, today's exact evaluator against
hashkit's counting kernel, side by side in one process on the same candidates.

    nice -n 5 python benchmarks/speed/rotation_speed.py --out benchmarks/speed

Data: synthetic training embeddings on the sphere, ``--classes`` classes (a Gaussian centre
each plus Gaussian noise, normalised), ``--queries`` queries and ``--database`` database items
(the search's defaults: 2,000 x 16,000), ``--bits`` bits. The noise is set so that the codes
are as spread as the synthetic codes of the evaluator benchmark (almost all distinct, many
ties in distance): the hardest case for a counting kernel, with nothing to deduplicate.

1. Per candidate: ``--candidates`` rotations R G (G a random plane rotation, as the search
   draws them, R a random rotation), each scored both ways in alternating order, as each
   search scores it: the candidate's codes (old: sgn(H (R G)^T), packed; new: the current
   projections H R^T plus a rank-2 term, their signs read straight into bit planes) and their
   exact mAP over the whole database, ties by database order (old: argsort_map.py; new:
   hashkit's counting kernel). Wall and CPU seconds of each, and the largest difference
   between the two mAPs.
2. The whole search, fixed seed, ``--steps`` steps: hashkit's ``random_search_rotation``
   against the old loop with the old evaluator (argsort_map.random_search_rotation); the
   accepted steps, the history of the best mAP and the final rotation must be identical.

Writes rotation_speed.json, rotation_speed.md and rotation_speed.png into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import argsort_map  # noqa: E402  (the old evaluator, kept here as the baseline)
from eval_command import _all_distances  # noqa: E402  (the popcount floor)

from hashkit import metrics  # noqa: E402
from hashkit.codes import sign_codes  # noqa: E402
from hashkit.rotation import (  # noqa: E402
    _turned_projections,
    plane_rotation,
    plane_rotation_factors,
    random_search_rotation,
)


def embeddings(rng, n, bits, centres, noise):
    labels = rng.integers(0, len(centres), n)
    h = centres[labels] + noise * rng.standard_normal((n, bits))
    h /= np.linalg.norm(h, axis=1, keepdims=True)
    return h.astype(np.float32), labels.astype(np.int64)


def timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    value = fn()
    return value, time.perf_counter() - wall, time.process_time() - cpu


def popcount_floor(xq, xb):
    """Every pair's Hamming distance of the candidate's codes, one popcount per pair, in as
    many threads over query blocks as the scorer uses: the least an exact mAP must do."""
    wq, wb = metrics._code_words(xq), metrics._code_words(xb)
    threads = len(os.sched_getaffinity(0))
    blocks = np.array_split(np.arange(len(xq)), threads * 4)
    with ThreadPoolExecutor(threads) as pool:
        list(
            pool.map(lambda rows: _all_distances(wq[rows], wb, np.empty(len(wb), np.uint8)), blocks)
        )


def per_candidate(hq, hb, lq, lb, bits, n, seed):
    new = metrics.mean_average_precision_sign_scorer(lq, lb, bits)
    rng = np.random.default_rng(seed)
    hq64, hb64 = hq.astype(np.float64), hb.astype(np.float64)
    r = plane_rotation(bits, 1.0, rng) @ plane_rotation(bits, 1.0, rng)
    vq, vb = hq64 @ r.T, hb64 @ r.T  # the new search keeps these for its current R

    def old_score(u, turn):
        rot = r @ (np.eye(bits) + u @ turn @ u.T)
        return argsort_map.mean_average_precision(
            sign_codes(hq64 @ rot.T), sign_codes(hb64 @ rot.T), lq, lb, bits
        )

    turned_q, turned_b = np.empty_like(vq), np.empty_like(vb)

    def new_score(u, turn):  # as hashkit.rotation.random_search_rotation scores a candidate
        right = turn.T @ (r @ u).T
        _turned_projections(hq64, vq, u, right, turned_q)
        _turned_projections(hb64, vb, u, right, turned_b)
        return new(turned_q, turned_b)

    new_score(*plane_rotation_factors(bits, 0.5, rng))  # loads (or compiles) the kernel
    popcount_floor(sign_codes(turned_q[:1]), sign_codes(turned_b))
    rows = []
    for i in range(n):
        factors = plane_rotation_factors(bits, rng.uniform(-1, 1), rng)
        order = (("old", old_score), ("new", new_score))
        row = {}
        for name, score in order if i % 2 == 0 else order[::-1]:
            value, wall, cpu = timed(lambda s=score, f=factors: s(*f))
            row[name] = {"map": value, "wall_s": wall, "cpu_s": cpu}
        xq, xb = sign_codes(turned_q), sign_codes(turned_b)  # this candidate's codes
        _, wall, cpu = timed(lambda xq=xq, xb=xb: popcount_floor(xq, xb))
        row["floor"] = {"wall_s": wall, "cpu_s": cpu}
        rows.append(row)
    return rows


def search_new(hq, hb, lq, lb, steps, seed):
    result, wall, cpu = timed(
        lambda: random_search_rotation(hq, hb, lq, lb, steps=steps, seed=seed)
    )
    return result.history, result.accepted, result.rotation, wall, cpu


def search_old(hq, hb, lq, lb, steps, seed):
    (history, accepted, r), wall, cpu = timed(
        lambda: argsort_map.random_search_rotation(hq, hb, lq, lb, steps=steps, seed=seed)
    )
    u, _, vt = np.linalg.svd(r)  # as hashkit returns it
    return history, accepted, (u @ vt).astype(np.float32), wall, cpu


def summary(values):
    values = np.asarray(values)
    return {
        "median": float(np.median(values)),
        "min": float(values.min()),
        "max": float(values.max()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--database", type=int, default=16000)
    parser.add_argument("--bits", type=int, default=32)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--noise", type=float, default=1.2, help="noise sd over centre sd")
    parser.add_argument("--candidates", type=int, default=20)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/speed"))
    args = parser.parse_args()
    command = "nice -n 5 python " + " ".join(shlex.quote(a) for a in sys.argv)
    load_start = os.getloadavg()
    rng = np.random.default_rng(args.seed)
    centres = rng.standard_normal((args.classes, args.bits)) / np.sqrt(args.bits)
    hq, lq = embeddings(rng, args.queries, args.bits, centres, args.noise / np.sqrt(args.bits))
    hb, lb = embeddings(rng, args.database, args.bits, centres, args.noise / np.sqrt(args.bits))
    xb = sign_codes(hb)
    distinct = len(np.unique(xb.view(f"V{xb.shape[1]}")))

    started = time.perf_counter()
    rows = per_candidate(hq, hb, lq, lb, args.bits, args.candidates, args.seed + 1)
    print(f"per candidate: {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    new_history, new_accepted, new_rotation, new_wall, new_cpu = search_new(
        hq, hb, lq, lb, args.steps, args.seed
    )
    print(f"new search: {new_wall:.0f} s", file=sys.stderr, flush=True)
    old_history, old_accepted, old_rotation, old_wall, old_cpu = search_old(
        hq, hb, lq, lb, args.steps, args.seed
    )
    print(f"old search: {old_wall:.0f} s", file=sys.stderr, flush=True)

    old_wall_s = [r["old"]["wall_s"] for r in rows]
    new_wall_s = [r["new"]["wall_s"] for r in rows]
    old_cpu_s = [r["old"]["cpu_s"] for r in rows]
    new_cpu_s = [r["new"]["cpu_s"] for r in rows]
    floor_wall_s = [r["floor"]["wall_s"] for r in rows]
    floor_cpu_s = [r["floor"]["cpu_s"] for r in rows]
    ratios = np.array(old_wall_s) / np.array(new_wall_s)
    accepted_new = np.flatnonzero(np.diff(new_history)).tolist()
    accepted_old = np.flatnonzero(np.diff(old_history)).tolist()
    result = {
        "command": command,
        "machine": {
            "cpus": len(os.sched_getaffinity(0)),
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "load_average_start": load_start,
            "load_average_end": os.getloadavg(),
        },
        "data": {
            "queries": args.queries,
            "database": args.database,
            "bits": args.bits,
            "classes": args.classes,
            "distinct_database_codes": distinct,
            "initial_map": new_history[0],
        },
        "per_candidate": {
            "candidates": args.candidates,
            "old_wall_s": summary(old_wall_s),
            "new_wall_s": summary(new_wall_s),
            "old_cpu_s": summary(old_cpu_s),
            "new_cpu_s": summary(new_cpu_s),
            "floor_wall_s": summary(floor_wall_s),
            "floor_cpu_s": summary(floor_cpu_s),
            "new_over_floor_cpu": float(np.median(new_cpu_s) / np.median(floor_cpu_s)),
            "speedup_wall_median": float(np.median(old_wall_s) / np.median(new_wall_s)),
            "speedup_cpu_median": float(np.median(old_cpu_s) / np.median(new_cpu_s)),
            "speedup_wall_per_candidate": summary(ratios),
            "max_abs_map_difference": float(
                max(abs(r["old"]["map"] - r["new"]["map"]) for r in rows)
            ),
            "rows": rows,
        },
        "search": {
            "steps": args.steps,
            "seed": args.seed,
            "new_wall_s": new_wall,
            "old_wall_s": old_wall,
            "new_cpu_s": new_cpu,
            "old_cpu_s": old_cpu,
            "speedup_wall": old_wall / new_wall,
            "accepted_new": new_accepted,
            "accepted_old": old_accepted,
            "same_accepted_steps": accepted_new == accepted_old,
            "max_abs_history_difference": float(
                np.max(np.abs(np.array(new_history) - np.array(old_history)))
            ),
            "same_final_rotation": bool(np.array_equal(new_rotation, old_rotation)),
            "initial_map": new_history[0],
            "final_map": new_history[-1],
            "history_new": new_history,
            "history_old": old_history,
        },
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "rotation_speed.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "rotation_speed.md").write_text(markdown(result))
    chart(result, args.out / "rotation_speed.png")


def markdown(r: dict) -> str:
    d, p, s, m = r["data"], r["per_candidate"], r["search"], r["machine"]
    return "\n".join(
        [
            "# Rotation search: the score of one candidate rotation",
            "",
            f"Made by `{r['command']}`.",
            "",
            f"Machine: {m['cpus']} CPUs shared with other jobs (load average "
            f"{m['load_average_start'][0]:.1f} at the start, {m['load_average_end'][0]:.1f} at "
            f"the end), Python {m['python']}, numpy {m['numpy']}. Wall times depend on that "
            "load; both scorers ran interleaved in one process, so their ratio is the figure "
            "to read. CPU seconds are less sensitive to the load.",
            "",
            f"Data: {d['queries']:,} queries x {d['database']:,} database items, {d['bits']} "
            f"bits, {d['classes']} classes of synthetic embeddings "
            f"({d['distinct_database_codes']:,} distinct database codes; mAP of sgn(h) "
            f"{d['initial_map']:.4f}).",
            "",
            "Score of a candidate R G = its codes for queries and database, then their exact "
            "mAP over the whole database, ties by database order. Old (argsort_map.py, the "
            "code hashkit had): codes sgn(H (R G)^T), stable argsort of each query's uint8 "
            "distance row, threads over query blocks. New (hashkit.rotation + "
            "hashkit.metrics.mean_average_precision_sign_scorer): projections from the "
            "current H R^T plus a rank-2 term, their signs read straight into the kernel's "
            "bit planes (no packed codes), labels prepared once, the counting kernel "
            "`hashkit.ranking`, threads over query blocks.",
            "",
            f"## Per candidate ({p['candidates']} candidates, alternating order)",
            "",
            "| | old | new | speed-up |",
            "|---|---|---|---|",
            f"| wall ms, median (min-max) | {_ms(p['old_wall_s'])} | {_ms(p['new_wall_s'])} | "
            f"**{p['speedup_wall_median']:.1f}x** |",
            f"| CPU ms, median (min-max) | {_ms(p['old_cpu_s'])} | {_ms(p['new_cpu_s'])} | "
            f"{p['speedup_cpu_median']:.1f}x |",
            "",
            f"Per-candidate wall speed-up: median {p['speedup_wall_per_candidate']['median']:.1f}x "
            f"(min {p['speedup_wall_per_candidate']['min']:.1f}x, max "
            f"{p['speedup_wall_per_candidate']['max']:.1f}x). Largest difference between the "
            f"two scorers' mAP: {p['max_abs_map_difference']:.1e}.",
            "",
            "Floor: every pair's Hamming distance of the same candidate's codes, one popcount "
            f"per pair, same threads: CPU {_ms(p['floor_cpu_s'])} ms, wall "
            f"{_ms(p['floor_wall_s'])} ms. The new score takes {p['new_over_floor_cpu']:.1f}x "
            "the floor's CPU time.",
            "",
            f"Issue 10's target, at least 10x per candidate: **{_verdict(p)}**. Where the "
            "new score's time goes: README.md in this folder.",
            "",
            f"## Whole search ({s['steps']} steps, seed {s['seed']})",
            "",
            f"Old scorer {s['old_wall_s']:.1f} s, new {s['new_wall_s']:.1f} s "
            f"({s['speedup_wall']:.1f}x, including the steps' rotations and codes). Accepted "
            f"steps: {s['accepted_new']} new, {s['accepted_old']} old, same steps: "
            f"{s['same_accepted_steps']}; same final rotation: {s['same_final_rotation']}; "
            f"largest difference in the best-mAP history {s['max_abs_history_difference']:.1e}; "
            f"mAP {s['initial_map']:.4f} -> {s['final_map']:.4f}.",
            "",
            "![per-candidate times](rotation_speed.png)",
            "",
        ]
    )


def _verdict(p: dict) -> str:
    wall, cpu = p["speedup_wall_median"], p["speedup_cpu_median"]
    if min(wall, cpu) >= 10:
        return f"met ({wall:.1f}x wall, {cpu:.1f}x CPU)"
    return f"not met ({wall:.1f}x wall, {cpu:.1f}x CPU)"


def _ms(stats: dict) -> str:
    return f"{stats['median'] * 1e3:.0f} ({stats['min'] * 1e3:.0f}-{stats['max'] * 1e3:.0f})"


def chart(r: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = r["per_candidate"]["rows"]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4))
    x = np.arange(len(rows))
    ax.plot(x, [row["old"]["wall_s"] * 1e3 for row in rows], "o-", label="old (argsort)")
    ax.plot(x, [row["new"]["wall_s"] * 1e3 for row in rows], "s-", label="new (counting)")
    ax.set(yscale="log", xlabel="candidate", ylabel="wall ms per score", title="Per candidate")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    s = r["search"]
    bx.plot(s["history_old"], label="old scorer", lw=3, alpha=0.5)
    bx.plot(s["history_new"], "--", label="new scorer")
    bx.set(xlabel="step", ylabel="best mAP", title=f"Search, {s['steps']} steps (identical)")
    bx.grid(alpha=0.3)
    bx.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
