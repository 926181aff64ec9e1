"""The approaches measured before choosing the evaluator's kernel, side by side in one process:
exact mAP over the whole database (ties by database order) of 2,000 x 16,000 codes at 32
bits, one thread each, CPU seconds (the machine is shared; CPU time is what each approach
costs, wall time is what the load allows).

    nice -n 5 python benchmarks/speed/approaches.py --out benchmarks/speed

1. argsort: the evaluator hashkit had (argsort_map.py): per block of queries, uint8
   distances, numpy's stable radix argsort of every row, sums over the relevant items in
   ranked order. A plain numpy kernel cannot avoid that sort: the position of a relevant item
   within its tie group needs either a stable sort or a running count per distance value,
   and a running count in numpy is one cumulative sum per distance value (33 passes).
2. byte counting (numba): per query, a vectorised pass of XOR + popcount into one distance
   byte per item, then one pass keeping a running count per distance: every item's position
   within its tie group; ranks of the relevant items follow from the final counts. No sort,
   but one histogram update (a store) per item.
3. bit-sliced counting (numba, chosen, hashkit.ranking): distances bit-sliced, 64 items per
   word; per distance and block of 64 items one mask and one popcount give the counts;
   the relevant items' ranks come from those counts and a popcount within their block.

Writes approaches.json, approaches.md and approaches.png into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np
from numba import njit

sys.path.insert(0, str(Path(__file__).resolve().parent))

import argsort_map  # noqa: E402

from hashkit import metrics  # noqa: E402
from hashkit.codes import pack_codes  # noqa: E402
from hashkit.ranking import _popcount  # noqa: E402


@njit(nogil=True, cache=True)
def byte_counting_ap(words_q, words_b, query_class, database_class, nbins, out):
    """Approach 2: whole-database AP of each query (codes of up to 64 bits, one word)."""
    nb = words_b.shape[0]
    dist = np.empty(nb, np.uint8)
    within = np.empty(nb, np.int64)
    count = np.zeros(nbins, np.int64)
    relevant_count = np.zeros(nbins, np.int64)
    start = np.zeros(nbins, np.int64)
    relevant_start = np.zeros(nbins, np.int64)
    ranks = np.empty(nb, np.int64)
    for q in range(words_q.shape[0]):
        word = words_q[q, 0]
        for j in range(nb):
            dist[j] = _popcount(word ^ words_b[j, 0])
        count[:] = 0
        for j in range(nb):
            d = dist[j]
            count[d] += 1
            within[j] = count[d]
        relevant_count[:] = 0
        for j in range(nb):
            if database_class[j] == query_class[q]:
                relevant_count[dist[j]] += 1
        total = 0
        relevant_total = 0
        for d in range(nbins):
            start[d] = total
            relevant_start[d] = relevant_total
            total += count[d]
            relevant_total += relevant_count[d]
        for j in range(nb):
            if database_class[j] == query_class[q]:
                d = dist[j]
                ranks[relevant_start[d]] = start[d] + within[j]
                relevant_start[d] += 1
        value = 0.0
        for i in range(relevant_total):
            value += (i + 1) / ranks[i]
        out[q] = value / relevant_total if relevant_total else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--database", type=int, default=16000)
    parser.add_argument("--bits", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/speed"))
    args = parser.parse_args()
    command = "nice -n 5 python " + " ".join(shlex.quote(a) for a in sys.argv)
    load_start = os.getloadavg()
    rng = np.random.default_rng(0)
    centres = rng.integers(0, 2, (10, args.bits))
    lq = rng.integers(0, 10, args.queries)
    lb = rng.integers(0, 10, args.database)
    xq = pack_codes(centres[lq] ^ (rng.random((args.queries, args.bits)) < 0.25))
    xb = pack_codes(centres[lb] ^ (rng.random((args.database, args.bits)) < 0.25))
    words_q, words_b = metrics._code_words(xq), metrics._code_words(xb)
    out = np.zeros(len(xq))
    approaches = {
        "argsort (before)": lambda: argsort_map.mean_average_precision(
            xq, xb, lq, lb, args.bits, n_threads=1
        ),
        "byte counting (numba)": lambda: (
            byte_counting_ap(words_q, words_b, lq, lb, args.bits + 1, out),
            out.mean(),
        )[1],
        "bit-sliced counting (numba, chosen)": lambda: metrics.mean_average_precision(
            xq, xb, lq, lb, args.bits, n_threads=1
        ),
    }
    values = {name: float(fn()) for name, fn in approaches.items()}  # compile, check
    cpu = {name: [] for name in approaches}
    for _ in range(args.repeats):
        for name, fn in approaches.items():
            start = time.process_time()
            fn()
            cpu[name].append(time.process_time() - start)
    base = np.median(cpu["argsort (before)"])
    rows = [
        {
            "approach": name,
            "cpu_s_median": float(np.median(times)),
            "cpu_s_min": float(min(times)),
            "cpu_s_max": float(max(times)),
            "speedup_vs_argsort": float(base / np.median(times)),
            "map": values[name],
        }
        for name, times in cpu.items()
    ]
    result = {
        "command": command,
        "load_average_start": load_start,
        "load_average_end": os.getloadavg(),
        "queries": args.queries,
        "database": args.database,
        "bits": args.bits,
        "repeats": args.repeats,
        "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "approaches.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# Approaches to the exact mAP kernel",
        "",
        f"Made by `{command}`.",
        "",
        f"{args.queries:,} x {args.database:,} codes, {args.bits} bits, 10 classes (25% bit "
        "flips from a class centre), whole-database mAP with ties by database order, one "
        f"thread, CPU seconds over {args.repeats} interleaved repeats (load average "
        f"{load_start[0]:.1f} -> {result['load_average_end'][0]:.1f}; see approaches.py for "
        "what each approach does).",
        "",
        "| approach | CPU ms, median (min-max) | speed-up | mAP |",
        "|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['approach']} | {r['cpu_s_median'] * 1e3:.0f} ({r['cpu_s_min'] * 1e3:.0f}-"
            f"{r['cpu_s_max'] * 1e3:.0f}) | {r['speedup_vs_argsort']:.1f}x | {r['map']:.12f} |"
        )
    lines += ["", "![approaches](approaches.png)", ""]
    (args.out / "approaches.md").write_text("\n".join(lines))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.barh(
        [r["approach"] for r in rows][::-1],
        [r["cpu_s_median"] * 1e3 for r in rows][::-1],
        xerr=None,
        color=["C2", "C1", "grey"],
    )
    for i, r in enumerate(rows[::-1]):
        ax.text(r["cpu_s_median"] * 1e3, i, f" {r['speedup_vs_argsort']:.1f}x", va="center")
    ax.set_xlabel("CPU ms per whole mAP, one thread")
    ax.set_title(f"{args.queries:,} x {args.database:,} codes, {args.bits} bits")
    fig.tight_layout()
    fig.savefig(args.out / "approaches.png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
