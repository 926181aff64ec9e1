"""Issue 10, target 1 (the evaluator part): ``hashkit eval`` on 10,000 x 59,000 codes at 32
bits as a whole command, against a plain numpy loop that ranks each query's distance row with
``np.argsort`` (numpy_argsort_map.py, also a whole command), and how close the computation
gets to the floor of one popcount per (query, database) pair.

    nice -n 5 python benchmarks/speed/eval_command.py --out benchmarks/speed

Synthetic codes as in benchmarks/eval_speed.py: 10 classes, each item flips each bit of its
class centre with probability 0.25 (almost all codes distinct, many ties in distance). Both
commands read the same two code stores and must print the same mAP.

Timed: ``hashkit eval`` (one untimed warm-up run, then ``--repeats`` runs: median, min-max),
the baseline once (it is slow), and in this process: ``evaluate_retrieval`` (everything
``hashkit eval`` computes), the old evaluator's mAP scan (argsort_map.py), the popcount floor
(a numba loop computing every pair's distance, same threads) and the start-up of the command
(``hashkit eval --help``).

Writes eval_command.json, eval_command.md and eval_command.png into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from numba import njit

sys.path.insert(0, str(Path(__file__).resolve().parent))

import argsort_map  # noqa: E402

from hashkit import metrics  # noqa: E402
from hashkit.codes import pack_codes  # noqa: E402
from hashkit.ranking import _popcount  # noqa: E402
from hashkit.store import CodeStore, write_store  # noqa: E402

HERE = Path(__file__).resolve().parent


def synthetic(rng, n, bits, centres):
    labels = rng.integers(0, len(centres), n)
    signs = centres[labels] ^ (rng.random((n, bits)) < 0.25)
    return pack_codes(signs), labels.astype(np.int64)


@njit(nogil=True, cache=True)
def _all_distances(words_q, words_b, row):
    """Every pair's Hamming distance (one popcount per pair for codes of up to 64 bits), kept
    in a row buffer; returns a checksum so that nothing is optimised away."""
    total = 0
    for q in range(words_q.shape[0]):
        word = words_q[q, 0]
        for j in range(words_b.shape[0]):
            row[j] = _popcount(word ^ words_b[j, 0])
        total += row[q % row.shape[0]]
    return total


def popcount_floor(xq, xb, threads):
    wq, wb = metrics._code_words(xq), metrics._code_words(xb)
    blocks = np.array_split(np.arange(len(xq)), threads * 4)

    def run(rows):
        return _all_distances(wq[rows], wb, np.empty(len(xb), np.uint8))

    run(blocks[0][:1])
    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(run, blocks))
    return time.perf_counter() - start


def command_seconds(argv, repeats):
    times, out = [], ""
    for _ in range(repeats):
        start = time.perf_counter()
        out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
        times.append(time.perf_counter() - start)
    return times, out


def in_process(fn, repeats):
    times, value = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - start)
    return times, value


def stats(times):
    return {
        "median": float(np.median(times)),
        "min": float(min(times)),
        "max": float(max(times)),
        "runs": len(times),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=10000)
    parser.add_argument("--database", type=int, default=59000)
    parser.add_argument("--bits", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/speed"))
    args = parser.parse_args()
    command = "nice -n 5 python " + " ".join(shlex.quote(a) for a in sys.argv)
    load_start = os.getloadavg()
    threads = len(os.sched_getaffinity(0))
    rng = np.random.default_rng(0)
    centres = rng.integers(0, 2, (10, args.bits))
    xq, lq = synthetic(rng, args.queries, args.bits, centres)
    xb, lb = synthetic(rng, args.database, args.bits, centres)
    hashkit_exe = str(Path(sys.executable).with_name("hashkit"))
    result = {"command": command}
    with tempfile.TemporaryDirectory() as tmp:
        q_path, b_path = Path(tmp) / "query.h5", Path(tmp) / "database.h5"
        write_store(q_path, CodeStore(xq, np.arange(len(xq)), args.bits, labels=lq))
        write_store(b_path, CodeStore(xb, np.arange(len(xb)), args.bits, labels=lb))
        eval_argv = [hashkit_exe, "eval", str(q_path), str(b_path), "--json"]
        subprocess.run(eval_argv, check=True, capture_output=True)  # warm-up: kernel cache
        eval_times, eval_out = command_seconds(eval_argv, args.repeats)
        print(f"hashkit eval: {np.median(eval_times):.1f} s", file=sys.stderr, flush=True)
        help_times, _ = command_seconds([hashkit_exe, "eval", "--help"], args.repeats)
        base_argv = [sys.executable, str(HERE / "numpy_argsort_map.py"), str(q_path), str(b_path)]
        base_times, base_out = command_seconds(base_argv, 1)
        print(f"baseline: {base_times[0]:.1f} s", file=sys.stderr, flush=True)
    evaluated = json.loads(eval_out)
    compute_times, _ = in_process(
        lambda: metrics.evaluate_retrieval(xq, xb, lq, lb, args.bits), args.repeats
    )
    old_times, old_map = in_process(
        lambda: argsort_map.mean_average_precision(xq, xb, lq, lb, args.bits), 1
    )
    floor_times, _ = in_process(lambda: popcount_floor(xq, xb, threads), args.repeats)
    floor = [t for t in floor_times]
    result.update(
        {
            "machine": {
                "cpus": threads,
                "processor": platform.processor() or platform.machine(),
                "python": platform.python_version(),
                "numpy": np.__version__,
                "load_average_start": load_start,
                "load_average_end": os.getloadavg(),
            },
            "data": {"queries": args.queries, "database": args.database, "bits": args.bits},
            "hashkit_eval_s": stats(eval_times),
            "baseline_command_s": stats(base_times),
            "speedup_whole_command": float(base_times[0] / np.median(eval_times)),
            "startup_s": stats(help_times),
            "evaluate_retrieval_s": stats(compute_times),
            "old_evaluator_map_only_s": stats(old_times),
            "popcount_floor_s": stats(floor),
            "compute_over_floor": float(np.median(compute_times) / np.median(floor)),
            "map_hashkit": evaluated["map"],
            "map_baseline": float(base_out.strip()),
            "map_old_evaluator": old_map,
        }
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "eval_command.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "eval_command.md").write_text(markdown(result))
    chart(result, args.out / "eval_command.png")


def markdown(r: dict) -> str:
    m, d = r["machine"], r["data"]

    def s(key, fmt="{:.2f}"):
        t = r[key]
        if t["runs"] == 1:
            return fmt.format(t["median"])
        return f"{fmt.format(t['median'])} ({fmt.format(t['min'])}-{fmt.format(t['max'])})"

    return "\n".join(
        [
            "# `hashkit eval`: speed of the whole command",
            "",
            f"Made by `{r['command']}`.",
            "",
            f"Machine: {m['cpus']} CPUs shared with other jobs (load average "
            f"{m['load_average_start'][0]:.1f} at the start, {m['load_average_end'][0]:.1f} at "
            f"the end), Python {m['python']}, numpy {m['numpy']}.",
            "",
            f"{d['queries']:,} query codes x {d['database']:,} database codes, {d['bits']} bits,"
            " 10 classes, synthetic (25% bit flips from a class centre: many ties). Seconds of "
            "wall time, median (min-max) where repeated.",
            "",
            "| what | seconds |",
            "|---|---|",
            f"| baseline command: plain numpy loop, `np.argsort` per query row "
            f"(numpy_argsort_map.py, one run) | {s('baseline_command_s', '{:.1f}')} |",
            f"| `hashkit eval QUERY DATABASE --json`, whole command | {s('hashkit_eval_s')} |",
            f"| of which start-up: `hashkit eval --help` | {s('startup_s')} |",
            f"| `evaluate_retrieval` in process (all the command's metrics) | "
            f"{s('evaluate_retrieval_s')} |",
            f"| floor: every pair's Hamming distance, one popcount per pair, same threads | "
            f"{s('popcount_floor_s')} |",
            f"| the evaluator hashkit had before, whole-database mAP only (argsort_map.py) | "
            f"{s('old_evaluator_map_only_s')} |",
            "",
            f"Whole command: **{r['speedup_whole_command']:.1f}x** faster than the baseline "
            "command. The metrics themselves take "
            f"{r['compute_over_floor']:.1f}x the time of just computing all the Hamming "
            "distances; the rest of the command is Python start-up, imports and reading the "
            "two stores.",
            "",
            f"mAP: hashkit {r['map_hashkit']:.10f}, baseline {r['map_baseline']:.10f}, old "
            f"evaluator {r['map_old_evaluator']:.10f}.",
            "",
            "![times](eval_command.png)",
            "",
        ]
    )


def chart(r: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [
        "baseline\n(np.argsort loop)",
        "hashkit eval\n(whole command)",
        "start-up\n(--help)",
        "evaluate_retrieval\n(in process)",
        "floor: all\ndistances",
    ]
    keys = [
        "baseline_command_s",
        "hashkit_eval_s",
        "startup_s",
        "evaluate_retrieval_s",
        "popcount_floor_s",
    ]
    values = [r[k]["median"] for k in keys]
    fig, ax = plt.subplots(figsize=(8, 4))
    bars = ax.bar(range(len(values)), values, color=["grey", "C0", "C1", "C2", "C3"])
    for bar, value in zip(bars, values):
        ax.text(bar.get_x() + bar.get_width() / 2, value, f"{value:.2f} s", ha="center")
    ax.set_yscale("log")
    ax.set_xticks(range(len(values)), names, fontsize=8)
    ax.set_ylabel("seconds (log)")
    d = r["data"]
    ax.set_title(f"{d['queries']:,} x {d['database']:,} codes, {d['bits']} bits")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
