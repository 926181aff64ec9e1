"""``hashkit bench``: retrieval quality and search speed of a model on a labelled split.

Quality: mAP over the whole database and mAP@k of the protocol's queries (ties broken by
database order), tie-aware mAP. Speed: queries per second of IndexBinaryFlat (1 thread and all
threads) and of IndexBinaryIVF over an nprobe sweep, with recall@10 against the flat result.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from hashkit import __version__
from hashkit.atomic import atomic_path
from hashkit.codes import code_statistics, sign_codes
from hashkit.index import build_index, default_nlist, search_index_for

NPROBES = (1, 2, 4, 8, 16, 32, 64)


def time_search(
    index,
    xq: np.ndarray,
    k: int,
    threads: int,
    min_seconds: float = 0.05,
    *,
    repeats: int = 5,
) -> tuple[dict, np.ndarray, np.ndarray]:
    """Queries per second of ``index.search(xq, k)`` with ``threads`` OpenMP threads.

    One untimed warm-up search (first-touch of the index, thread start-up), then ``repeats``
    timed measurements, each of as many whole searches as fit in ``min_seconds`` (at least
    one). Returns ``({"qps": median, "qps_min": ..., "qps_max": ..., "repeats": repeats},
    D, I)`` with ``D, I`` the result of the last search.
    """
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(threads)
    try:
        D, I = index.search(xq, k)
        rates = []
        for _ in range(repeats):
            runs, start = 0, time.perf_counter()
            while True:
                D, I = index.search(xq, k)
                runs += 1
                elapsed = time.perf_counter() - start
                if elapsed >= min_seconds:
                    break
            rates.append(runs * len(xq) / elapsed)
    finally:
        faiss.omp_set_num_threads(before)
    timing = {
        "qps": float(np.median(rates)),
        "qps_min": float(min(rates)),
        "qps_max": float(max(rates)),
        "repeats": repeats,
    }
    return timing, D, I


def recall_at(D_ref: np.ndarray, D: np.ndarray, I_ref: np.ndarray, I: np.ndarray, k: int) -> dict:
    """Two recalls of an approximate result against the exact one (both ``nq x k``):

    ``recall`` counts returned items within the exact k-th distance (correct under ties, where
    the exact id set is one arbitrary choice among equals); ``id_recall`` is the plain overlap
    of id sets.
    """
    kth = D_ref[:, k - 1 : k]
    within = ((D[:, :k] <= kth) & (I[:, :k] >= 0)).sum(axis=1)
    overlap = [len(np.intersect1d(a[:k], b[:k])) for a, b in zip(I_ref, I)]
    return {"recall": float(within.mean() / k), "id_recall": float(np.mean(overlap) / k)}


def run_benchmark(
    bundle,
    dataset,
    split,
    *,
    top_k: int | None = None,
    k: int = 10,
    nprobes: Sequence[int] = NPROBES,
    nlist: int | None = None,
    device: str = "auto",
    progress: Callable | None = None,
    gpu: bool | None = None,
) -> dict:
    """Encode the split's queries and database with ``bundle`` and measure quality and speed.

    ``top_k``: k of mAP@k (None: the protocol's, see :func:`hashkit.metrics.protocol_top_k`).

    ``gpu``: flat search also on GpuIndexBinaryFlat (None: when faiss sees a GPU)."""
    import faiss

    from hashkit.encode import resolve_device
    from hashkit.metrics import evaluate_retrieval, protocol_top_k
    from hashkit.train import embed_dataset

    dev = resolve_device(device)
    net = bundle.build_network(dev)
    h_query = embed_dataset(net, dataset, split.query, dev, progress=progress)
    h_db = embed_dataset(net, dataset, split.database, dev, progress=progress)
    bits = bundle.bits
    xq = sign_codes(h_query, bundle.rotation)
    xb = sign_codes(h_db, bundle.rotation)
    lq, lb = dataset.labels[split.query], dataset.labels[split.database]
    top_k = top_k or protocol_top_k(lb)
    quality = evaluate_retrieval(xq, xb, lq, lb, bits, top_k=[top_k])
    sign_only = evaluate_retrieval(
        sign_codes(h_query), sign_codes(h_db), lq, lb, bits, top_k=[top_k]
    )
    threads = faiss.omp_get_max_threads()
    flat = build_index(xb, np.arange(len(xb)), bits, "flat")
    t1, D_ref, I_ref = time_search(flat, xq, k, 1)
    t_all, _, _ = time_search(flat, xq, k, threads)
    flat_gpu, on_gpu = search_index_for(flat, gpu)
    t_gpu = time_search(flat_gpu, xq, k, threads)[0] if on_gpu else None
    nlist = nlist or default_nlist(len(xb))
    ivf = build_index(xb, np.arange(len(xb)), bits, "ivf", nlist=nlist)
    sweep = []
    for nprobe in nprobes:
        if nprobe > nlist:
            break
        ivf.nprobe = nprobe
        t_ivf, D, I = time_search(ivf, xq, k, threads)
        sweep.append(
            {
                "nprobe": nprobe,
                "qps": t_ivf["qps"],
                "qps_range": [t_ivf["qps_min"], t_ivf["qps_max"]],
                **recall_at(D_ref, D, I_ref, I, k),
            }
        )
    return {
        "hashkit_version": __version__,
        "model_fingerprint": bundle.fingerprint,
        "bits": bits,
        "dataset": dataset.name,
        "protocol": split.protocol,
        "queries": int(len(xq)),
        "database": int(len(xb)),
        "map": quality["map"],
        "top_k": top_k,
        f"map_at_{top_k}": quality["map_at"][top_k],
        "tie_aware_map": quality["tie_aware_map"],
        "precision_radius2": quality["precision_radius2"],
        "map_without_rotation": sign_only["map"],
        "code_statistics": code_statistics(xb, bits),
        "flat": {
            "qps_1_thread": t1["qps"],
            "qps_1_thread_range": [t1["qps_min"], t1["qps_max"]],
            "qps_all_threads": t_all["qps"],
            "qps_all_threads_range": [t_all["qps_min"], t_all["qps_max"]],
            "qps_gpu": t_gpu["qps"] if t_gpu else None,
            "qps_gpu_range": [t_gpu["qps_min"], t_gpu["qps_max"]] if t_gpu else None,
            "threads": threads,
            "k": k,
            "timing": f"median of {t1['repeats']} timed runs after one warm-up search",
        },
        "ivf": {"nlist": nlist, "k": k, "sweep": sweep},
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "faiss": faiss.__version__,
        },
    }


def benchmark_markdown(result: dict, command: str = "") -> str:
    """A short Markdown report of ``run_benchmark``'s result."""
    top = next(key for key in result if key.startswith("map_at_"))
    lines = [
        f"# hashkit bench: {result['dataset']}, {result['bits']} bits",
        "",
        f"{result['queries']} queries against {result['database']} database codes "
        f"({result['protocol']} protocol), hashkit {result['hashkit_version']}, "
        f"model {result['model_fingerprint'][:12]}.",
    ]
    if command:
        lines += ["", f"Made with: `{command}`"]
    stats = result["code_statistics"]
    flat = result["flat"]
    lines += [
        "",
        "| metric | value |",
        "|---|---|",
        f"| mAP (whole database, ties by database order) | {result['map']:.4f} |",
        f"| mAP@{top[7:]} | {result[top]:.4f} |",
        f"| tie-aware mAP | {result['tie_aware_map']:.4f} |",
        f"| precision within Hamming radius 2 | {result['precision_radius2']:.4f} |",
        f"| mAP without the rotation, sgn(h) | {result['map_without_rotation']:.4f} |",
        f"| code balance, mean abs(ones - 0.5) | {stats['balance']:.4f} |",
        f"| mean abs bit correlation | {stats['bit_correlation']:.4f} |",
        f"| distinct codes in the database | {stats['distinct_codes']} |",
        "",
        f"| index | queries/s, median (min-max) | recall@{flat['k']} (ties counted) | "
        f"id recall@{flat['k']} |",
        "|---|---|---|---|",
        f"| flat, 1 thread | {_qps(flat, 'qps_1_thread')} | 1.000 | 1.000 |",
        f"| flat, {flat['threads']} threads | {_qps(flat, 'qps_all_threads')} | 1.000 | 1.000 |",
    ]
    if flat.get("qps_gpu"):
        lines.append(f"| flat, GPU | {_qps(flat, 'qps_gpu')} | 1.000 | 1.000 |")
    for row in result["ivf"]["sweep"]:
        lines.append(
            f"| ivf nlist={result['ivf']['nlist']} nprobe={row['nprobe']} | "
            f"{_qps(row, 'qps')} | {row['recall']:.3f} | {row['id_recall']:.3f} |"
        )
    if flat.get("timing"):
        lines += ["", f"Queries/s: {flat['timing']}."]
    return "\n".join(lines) + "\n"


def _qps(row: dict, key: str) -> str:
    """``median (min-max)`` of a throughput; results written before the spread was recorded
    have the median only."""
    spread = row.get("qps_range" if key == "qps" else f"{key}_range")
    if not spread:
        return f"{row[key]:,.0f}"
    return f"{row[key]:,.0f} ({spread[0]:,.0f}-{spread[1]:,.0f})"


def plot_benchmark(result: dict, path: str | os.PathLike) -> None:
    """Queries/s against recall@k of the IVF nprobe sweep, with the flat index for reference,
    as a PNG (written atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sweep = result["ivf"]["sweep"]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(
        [r["recall"] for r in sweep],
        [r["qps"] for r in sweep],
        "o-",
        label=f"IVF nlist={result['ivf']['nlist']} (nprobe sweep)",
    )
    for r in sweep:
        ax.annotate(
            str(r["nprobe"]),
            (r["recall"], r["qps"]),
            textcoords="offset points",
            xytext=(4, 4),
            fontsize=8,
        )
    flat = result["flat"]
    ax.plot([1.0], [flat["qps_all_threads"]], "s", label=f"flat, {flat['threads']} threads")
    ax.plot([1.0], [flat["qps_1_thread"]], "^", label="flat, 1 thread")
    ax.set_yscale("log")
    ax.set_xlabel(f"recall@{flat['k']} (ties counted)")
    ax.set_ylabel("queries / s")
    ax.set_title(
        f"{result['dataset']}, {result['bits']} bits, {result['database']:,} codes, "
        f"mAP {result['map']:.3f}"
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def write_benchmark(result: dict, out_dir: str | os.PathLike, command: str = "") -> list[Path]:
    """Write ``bench.json``, ``bench.md`` and ``bench.png`` into ``out_dir`` (atomically)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in (
        ("bench.json", json.dumps({**result, "command": command}, indent=2)),
        ("bench.md", benchmark_markdown(result, command)),
    ):
        with atomic_path(out_dir / name) as tmp:
            tmp.write_text(text if text.endswith("\n") else text + "\n")
        written.append(out_dir / name)
    plot_benchmark(result, out_dir / "bench.png")
    written.append(out_dir / "bench.png")
    return written
