"""Milvus Lite against FAISS flat on the same random codes (issue 11, "Measured").

For each code length and database size: a code store of N uniform random codes (ids 0..N-1,
empty paths, no labels) is

- indexed by FAISS IndexBinaryFlat (hashkit.index.build_index): build time;
- exported to Milvus Lite by hashkit (export_to_milvus: read the store, look up which ids are
  there, insert, flush; BIN_FLAT, the only index Lite has): time and rows/s;

then the same queries (uniform random codes, k = 10) are searched in both, one warm-up and
``--repeats`` timed runs each: FAISS with 1 and with all threads, Milvus through
hashkit.milvus_search.MilvusSearcher (the path `hashkit search --milvus` takes). Reported: the
median queries/s and the spread (min..max), the per-thread scan rate (codes/s) of FAISS, and
the agreement of the two results (rows whose 10 distances are equal; recall@10 counting ties,
as hashkit.bench.recall_at does). Single-query latency (nq = 1) is timed too.

Writes milvus_vs_faiss.json, milvus_vs_faiss.md and milvus_vs_faiss.png to --out.

    OMP_WAIT_POLICY=PASSIVE nice -n 5 python benchmarks/scale/milvus_vs_faiss.py \\
        --bits 32 64 --sizes 100000 1000000 --out benchmarks/scale/results
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

from hashkit.bench import recall_at
from hashkit.export.milvus import export_to_milvus
from hashkit.index import build_index
from hashkit.milvus_search import MilvusSearcher
from hashkit.store import CodeStore, write_store

K = 10


def timed_runs(fn, repeats: int) -> list[float]:
    """Seconds of ``repeats`` calls of ``fn`` after one untimed warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def rate_summary(times: list[float], per_run: int) -> dict:
    """Median and spread of ``per_run`` items per run, in items/s."""
    rates = sorted(per_run / t for t in times)
    return {"median": statistics.median(rates), "min": rates[0], "max": rates[-1]}


def faiss_qps(index, xq: np.ndarray, threads: int, repeats: int) -> dict:
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(threads)
    try:
        return rate_summary(timed_runs(lambda: index.search(xq, K), repeats), len(xq))
    finally:
        faiss.omp_set_num_threads(before)


def measure(bits: int, n: int, nq: int, repeats: int, tmp: Path, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    nbytes = bits // 8
    codes = rng.integers(0, 256, (n, nbytes), dtype=np.uint8)
    xq = rng.integers(0, 256, (nq, nbytes), dtype=np.uint8)
    ids = np.arange(n, dtype=np.int64)
    store = tmp / f"codes{bits}_{n}.h5"
    write_store(store, CodeStore(codes=codes, ids=ids, bits=bits, paths=[""] * n))
    row = {"bits": bits, "n": n, "nq": nq, "k": K, "repeats": repeats}

    start = time.perf_counter()
    index = build_index(codes, ids, bits, "flat")
    row["faiss_build_s"] = time.perf_counter() - start
    row["faiss_qps_1_thread"] = faiss_qps(index, xq, 1, repeats)
    row["faiss_qps_all_threads"] = faiss_qps(index, xq, os.cpu_count() or 1, repeats)
    row["faiss_codes_per_s_per_thread"] = row["faiss_qps_1_thread"]["median"] * n
    faiss.omp_set_num_threads(1)
    row["faiss_latency_ms_1_query"] = statistics.median(
        1e3 * t for t in timed_runs(lambda: index.search(xq[:1], K), 20)
    )
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    D_ref, I_ref = index.search(xq, K)

    uri = tmp / f"milvus{bits}_{n}.db"
    start = time.perf_counter()
    report = export_to_milvus(store, uri, "codes", batch_size=10000)
    row["milvus_export_s"] = time.perf_counter() - start
    row["milvus_export_rows_per_s"] = n / row["milvus_export_s"]
    assert report.count == n, report
    searcher = MilvusSearcher(uri, "codes")
    try:
        row["milvus_qps"] = rate_summary(
            timed_runs(lambda: searcher.search(xq, K), repeats), len(xq)
        )
        row["milvus_codes_per_s"] = row["milvus_qps"]["median"] * n
        row["milvus_latency_ms_1_query"] = statistics.median(
            1e3 * t for t in timed_runs(lambda: searcher.search(xq[:1], K), 20)
        )
        D, I = searcher.search(xq, K)
    finally:
        searcher.close()
    row["rows_with_equal_distances"] = float(np.mean(np.all(D == D_ref, axis=1)))
    row["milvus_recall_at_10"] = recall_at(D_ref, D, I_ref, I, K)["recall"]
    row["disk_bytes_milvus_lite"] = sum(
        f.stat().st_size for f in Path(uri).parent.rglob("*") if f.is_file() and uri.name in str(f)
    )
    return row


def fmt_rate(r: dict) -> str:
    return f"{r['median']:,.0f} ({r['min']:,.0f}..{r['max']:,.0f})"


def write_markdown(path: Path, result: dict) -> None:
    lines = [
        "# Milvus Lite vs FAISS flat on the same codes (issue 11)",
        "",
        f"Made with: `{result['command']}` ({result['minutes']:.1f} min).",
        "",
        f"Machine: {result['machine']}; pymilvus {result['pymilvus']}, milvus-lite "
        f"{result['milvus_lite']}, faiss {faiss.__version__}. Uniform random codes, ids 0..N-1, "
        f"empty paths; {result['rows'][0]['nq']} uniform random queries, k = {K}; one warm-up "
        f"then {result['rows'][0]['repeats']} timed runs: median (min..max). Milvus Lite runs "
        "BIN_FLAT (exact; its only binary index) in its own server process, reached over a "
        "local socket; its search time includes that round trip and pymilvus's parsing of the "
        "reply. Export = hashkit export milvus end to end (read the HDF5 store, look up which "
        "ids are already there, insert, flush; it includes starting the Lite server, about "
        "1 s). Milvus Lite uses as many threads as it likes: its codes/s are per process, "
        "not per thread.",
        "",
        "| bits | N | FAISS build s | Milvus export s (rows/s) | FAISS q/s 1 thread | "
        "FAISS q/s all threads | Milvus Lite q/s | FAISS codes/s/thread | Milvus Lite codes/s | "
        "latency of 1 query, ms: FAISS 1 thread / Milvus | equal distances | Milvus recall@10 |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['bits']} | {r['n']:,} | {r['faiss_build_s']:.2f} | "
            f"{r['milvus_export_s']:.1f} ({r['milvus_export_rows_per_s']:,.0f}) | "
            f"{fmt_rate(r['faiss_qps_1_thread'])} | {fmt_rate(r['faiss_qps_all_threads'])} | "
            f"{fmt_rate(r['milvus_qps'])} | {r['faiss_codes_per_s_per_thread']:.2e} | "
            f"{r['milvus_codes_per_s']:.2e} | {r['faiss_latency_ms_1_query']:.2f} / "
            f"{r['milvus_latency_ms_1_query']:.2f} | {r['rows_with_equal_distances']:.0%} | "
            f"{r['milvus_recall_at_10']:.3f} |"
        )
    if result.get("not_run"):
        lines += ["", "Not run: " + "; ".join(result["not_run"])]
    lines += ["", "![queries/s](milvus_vs_faiss.png)", ""]
    path.write_text("\n".join(lines))


def plot(path: Path, rows: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_q, ax_b) = plt.subplots(1, 2, figsize=(11, 4))
    engines = (
        ("faiss_qps_1_thread", "FAISS flat, 1 thread", "tab:blue"),
        ("faiss_qps_all_threads", "FAISS flat, all threads", "tab:cyan"),
        ("milvus_qps", "Milvus Lite BIN_FLAT", "tab:red"),
    )
    for bits, style in zip(sorted({r["bits"] for r in rows}), ("o-", "s--", "^:")):
        sub = [r for r in rows if r["bits"] == bits]
        n = [r["n"] for r in sub]
        for key, label, colour in engines:
            med = np.array([r[key]["median"] for r in sub])
            err = [med - [r[key]["min"] for r in sub], [r[key]["max"] for r in sub] - med]
            ax_q.errorbar(
                n, med, yerr=err, fmt=style, color=colour, capsize=3, label=f"{label}, {bits} bits"
            )
        ax_b.plot(n, [r["faiss_build_s"] for r in sub], style, color="tab:blue",
                  label=f"FAISS flat build, {bits} bits")  # fmt: skip
        ax_b.plot(n, [r["milvus_export_s"] for r in sub], style, color="tab:red",
                  label=f"hashkit export milvus (Lite), {bits} bits")  # fmt: skip
    for ax in (ax_q, ax_b):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("database codes N")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    ax_q.set_ylabel(f"queries/s (k={K}; median, min..max)")
    ax_b.set_ylabel("seconds")
    ax_q.set_title("Search")
    ax_b.set_title("Build (FAISS) / export (Milvus Lite)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bits", type=int, nargs="+", default=[32])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--budget-min", type=float, default=60.0, help="Skip what starts later.")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/scale/results"))
    args = parser.parse_args()
    import milvus_lite
    import pymilvus

    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    result = {
        "command": "OMP_WAIT_POLICY=PASSIVE nice -n 5 python "
        + shlex.join(["benchmarks/scale/milvus_vs_faiss.py", *sys.argv[1:]]),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores "
        "shared with other jobs (numbers are noisy lower bounds)",
        "pymilvus": pymilvus.__version__,
        "milvus_lite": getattr(milvus_lite, "__version__", "?"),
        "rows": [],
        "not_run": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        for bits in args.bits:
            for n in args.sizes:
                if (time.perf_counter() - started) / 60 > args.budget_min:
                    result["not_run"].append(f"{bits} bits, N={n:,} (over the time budget)")
                    continue
                row = measure(bits, n, args.queries, args.repeats, Path(tmp), args.seed)
                result["rows"].append(row)
                print(json.dumps(row), flush=True)
                result["minutes"] = (time.perf_counter() - started) / 60
                (args.out / "milvus_vs_faiss.json").write_text(json.dumps(result, indent=2))
                write_markdown(args.out / "milvus_vs_faiss.md", result)
                plot(args.out / "milvus_vs_faiss.png", result["rows"])


if __name__ == "__main__":
    main()
