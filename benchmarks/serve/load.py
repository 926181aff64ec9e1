"""Load test of ``hashkit serve`` on 127.0.0.1: N concurrent clients, with and without batching.

For each service setting (batching with a wait window: ``--batch-wait-ms 2``; batching of what
is already queued, no wait: ``--batch-wait-ms 0``; no batching: ``--max-batch 1``) a fresh
``hashkit serve`` process is started; then, for each query
kind (``/healthz``, the HTTP stack's own ceiling; code queries, JSON with one packed code;
image queries, one PNG upload) and each client count (1, 4, 16, 64), the clients send
requests back to back on keep-alive connections for ``--seconds`` (at most ``--max-requests``)
after a short warm-up. Every request is checked for status 200; latencies are per request.

The index is the demo index when given (``--index``, with ``--images`` for the query PNGs),
else a synthetic one: 69,000 random 32-bit codes and the demo's network (small-cnn, 28 x 28
grey) with random weights, which costs the same per image as a trained one.

Writes serve_load.json, serve_load.md and serve_load.png:

    nice -n 5 python benchmarks/serve/load.py \\
        --index demo/index.faiss --images demo/images/query --out benchmarks/serve
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import re
import shlex
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

HOST = "127.0.0.1"  # never anything else: this script only loads a local service
CLIENTS = (1, 4, 16, 64)
KINDS = ("healthz", "code", "image")
SETTINGS = {
    "batch, wait 2 ms": ["--batch-wait-ms", "2", "--max-batch", "64"],
    "batch, no wait (default)": ["--batch-wait-ms", "0", "--max-batch", "64"],
    "no batching": ["--max-batch", "1"],
}
_BATCH = re.compile(rb'"batch_queries":(\d+)')


def synthetic_index(folder: Path, n: int = 69000, bits: int = 32) -> tuple[Path, Path]:
    """A flat index of ``n`` random codes with a randomly initialised small-cnn model, and a
    folder of 200 random 28 x 28 grey PNG query images."""
    import torch
    from PIL import Image

    from hashkit.bundle import Bundle, save_bundle
    from hashkit.index import build_index, write_index
    from hashkit.models import HashNet, NetworkConfig
    from hashkit.store import CodeStore, read_store_attrs, write_store

    torch.manual_seed(0)
    config = NetworkConfig(bits=bits)
    bundle = Bundle(config, HashNet(config).state_dict(), np.eye(bits, dtype=np.float32))
    fingerprint = save_bundle(bundle, folder / "model.pt")
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 256, (n, bits // 8), dtype=np.uint8)
    ids = np.arange(n, dtype=np.int64)
    write_store(folder / "index.h5", CodeStore(codes, ids, bits, fingerprint=fingerprint))
    store = read_store_attrs(folder / "index.h5")
    write_index(
        build_index(codes, ids, bits, "flat"),
        folder / "index.faiss",
        bits=bits,
        store=folder / "index.h5",
        model=folder / "model.pt",
        model_fingerprint=fingerprint,
        store_uuid=str(store["uuid"]),
    )
    images = folder / "queries"
    images.mkdir()
    for i in range(200):
        Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save(images / f"{i}.png")
    return folder / "index.faiss", images


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def start_service(index: Path, extra: list[str], log: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    command = [sys.executable, "-m", "hashkit.cli.main", "serve", str(index), "--host", HOST,
               "--port", str(port), "--reload-interval", "0", *extra]  # fmt: skip
    process = subprocess.Popen(command, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"hashkit serve exited: {log.read_text()[-2000:]}")
        try:
            with socket.create_connection((HOST, port), timeout=1) as s:
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                if s.recv(64).startswith(b"HTTP/1.1 200"):
                    return process, port
        except OSError:
            time.sleep(0.3)
    process.kill()
    raise RuntimeError("hashkit serve did not start in 300 s")


def stop_service(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


def code_requests(codes: np.ndarray, k: int) -> list[bytes]:
    out = []
    for code in codes:
        body = json.dumps({"codes": [code.tobytes().hex()], "k": k}).encode()
        out.append(
            b"POST /api/search HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
    return out


def image_requests(paths: list[Path], k: int) -> list[bytes]:
    out = []
    for path in paths:
        boundary = uuid.uuid4().hex
        body = (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="k"\r\n\r\n{k}\r\n'
                f'--{boundary}\r\nContent-Disposition: form-data; name="images"; '
                f'filename="{path.name}"\r\nContent-Type: image/png\r\n\r\n'
            ).encode()
            + path.read_bytes()
            + f"\r\n--{boundary}--\r\n".encode()
        )
        out.append(
            b"POST /api/search HTTP/1.1\r\nHost: bench\r\n"
            + f"Content-Type: multipart/form-data; boundary={boundary}\r\n".encode()
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
    return out


async def _client(port, requests, stop_at, max_requests, counter, latencies, errors, batches):
    reader, writer = await asyncio.open_connection(HOST, port)
    i = random.randrange(len(requests))
    try:
        while time.monotonic() < stop_at and counter[0] < max_requests:
            counter[0] += 1
            start = time.perf_counter()
            writer.write(requests[i % len(requests)])
            i += 1
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(re.search(rb"(?i)content-length: (\d+)", head).group(1))
            body = await reader.readexactly(length)
            latencies.append(time.perf_counter() - start)
            if not head.startswith(b"HTTP/1.1 200"):
                errors.append(head.split(b"\r\n")[0].decode() + " " + body[:200].decode())
            elif match := _BATCH.search(body):
                batches.append(int(match.group(1)))
    except (OSError, asyncio.IncompleteReadError) as exc:
        errors.append(f"connection: {exc}")
    finally:
        writer.close()


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process so far (Linux /proc), or None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def load(port: int, requests: list[bytes], clients: int, seconds: float, max_requests: int):
    latencies: list[float] = []
    errors: list[str] = []
    batches: list[int] = []
    counter = [0]
    start = time.monotonic()
    stop_at = start + seconds
    await asyncio.gather(
        *(
            _client(port, requests, stop_at, max_requests, counter, latencies, errors, batches)
            for _ in range(clients)
        )
    )
    elapsed = time.monotonic() - start
    lat = np.array(latencies) * 1000 if latencies else np.zeros(1)
    return {
        "clients": clients,
        "requests": len(latencies),
        "errors": len(errors),
        "error_examples": errors[:3],
        "seconds": round(elapsed, 3),
        "requests_per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": round(float(np.percentile(lat, 50)), 2),
        "p95_ms": round(float(np.percentile(lat, 95)), 2),
        "p99_ms": round(float(np.percentile(lat, 99)), 2),
        "mean_batch_queries": round(float(np.mean(batches)), 2) if batches else None,
    }


def run(args) -> dict:
    from hashkit.store import read_store

    work = Path(tempfile.mkdtemp(prefix="hashkit-serve-load-"))
    if args.index:
        index, images, source = Path(args.index), Path(args.images), "demo"
    else:
        index, images = synthetic_index(work)
        source = "synthetic"
    store = read_store(Path(str(index)[: -len(".faiss")] + ".h5"), paths=False)
    rng = np.random.default_rng(0)
    queries = store.codes[rng.choice(len(store.codes), 1000, replace=False)]
    pngs = sorted(images.rglob("*.png"))[:: max(1, len(list(images.rglob("*.png"))) // 500)]
    requests = {
        "healthz": [b"GET /healthz HTTP/1.1\r\nHost: bench\r\n\r\n"],
        "code": code_requests(queries, args.k),
        "image": image_requests(pngs, args.k),
    }
    results = []
    for setting, extra in SETTINGS.items():
        process, port = start_service(index, extra, work / f"serve-{len(results)}.log")
        try:
            for kind in KINDS:
                asyncio.run(load(port, requests[kind], 4, args.warmup, args.max_requests))
                for clients in CLIENTS:
                    load_before = os.getloadavg()[0]
                    server_cpu, client_cpu = cpu_seconds(process.pid), time.process_time()
                    row = asyncio.run(
                        load(port, requests[kind], clients, args.seconds, args.max_requests)
                    )
                    server_cpu = cpu_seconds(process.pid) - server_cpu if server_cpu else None
                    client_cpu = time.process_time() - client_cpu
                    n = max(row["requests"], 1)
                    row.update(
                        setting=setting,
                        kind=kind,
                        load_avg_1min=load_before,
                        server_cpu_ms_per_request=round(1000 * server_cpu / n, 3)
                        if server_cpu is not None
                        else None,
                        client_cpu_ms_per_request=round(1000 * client_cpu / n, 3),
                    )
                    results.append(row)
                    print(
                        f"{setting:24s} {kind:8s} {clients:3d} clients: "
                        f"{row['requests_per_s']:8.1f} req/s  p50 {row['p50_ms']:7.2f}  "
                        f"p99 {row['p99_ms']:7.2f} ms  "
                        f"errors {row['errors']}  batch {row['mean_batch_queries']}  server "
                        f"{row['server_cpu_ms_per_request']} ms CPU/req",
                        flush=True,
                    )
        finally:
            stop_service(process)
    return {
        "command": "nice -n 5 python " + shlex.join(sys.argv),
        "index": {
            "source": source,
            "path": str(index),
            "codes": len(store.ids),
            "bits": store.bits,
            "query_images": len(pngs),
        },  # fmt: skip
        "k": args.k,
        "seconds_per_cell": args.seconds,
        "settings": SETTINGS,
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "note": args.note,
        },
        "results": results,
    }


def targets(report: dict) -> list[tuple[str, str, bool]]:
    """The issue's targets, per setting: (what, measured, met)."""
    out = []
    by = {(r["setting"], r["kind"], r["clients"]): r for r in report["results"]}
    for setting in SETTINGS:
        code = by[(setting, "code", 16)]["requests_per_s"]
        health = by[(setting, "healthz", 16)]["requests_per_s"]
        best_image = max(by[(setting, "image", c)]["requests_per_s"] for c in CLIENTS)
        errors = sum(r["errors"] for r in report["results"] if r["setting"] == setting)
        out += [
            (f"{setting}: code queries at 16 clients >= half of /healthz",
             f"{code:.0f} vs {health:.0f} req/s ({code / health:.0%})", code >= health / 2),
            (f"{setting}: image queries >= 100/s", f"{best_image:.0f} req/s (best client count)",
             best_image >= 100),
            (f"{setting}: zero errors", f"{errors} errors", errors == 0),
        ]  # fmt: skip
    return out


def write_markdown(report: dict, path: Path) -> None:
    index = report["index"]
    lines = [
        "# hashkit serve under load",
        "",
        f"Command: `{report['command']}`",
        "",
        f"Index: {index['source']}, {index['codes']:,} codes of {index['bits']} bits (flat); "
        f"k = {report['k']}; {report['seconds_per_cell']} s per cell after a warm-up; "
        f"{report['machine']['cpus']} CPUs. {report['machine']['note']}",
        "",
        "Server CPU is the service process's user + system time per request (all its threads); "
        "load avg is the machine's 1-minute load average when the cell started.",
        "",
        "| setting | query | clients | req/s | p50 ms | p95 ms | p99 ms | queries/batch | "
        "server CPU ms/req | errors | load avg |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["results"]:
        batch = "" if r["mean_batch_queries"] is None else f"{r['mean_batch_queries']:.1f}"
        cpu = r["server_cpu_ms_per_request"]
        lines.append(
            f"| {r['setting']} | {r['kind']} | {r['clients']} | {r['requests_per_s']:.0f} | "
            f"{r['p50_ms']:.1f} | {r['p95_ms']:.1f} | {r['p99_ms']:.1f} | {batch} | "
            f"{'' if cpu is None else f'{cpu:.2f}'} | {r['errors']} | {r['load_avg_1min']:.1f} |"
        )
    lines += ["", "## Targets", "", "| target | measured | met |", "|---|---|---|"]
    lines += [f"| {what} | {got} | {'yes' if ok else 'no'} |" for what, got, ok in targets(report)]
    path.write_text("\n".join(lines) + "\n")


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for kind, colour in zip(KINDS, ("tab:gray", "tab:blue", "tab:orange")):
        for setting, style in zip(SETTINGS, ("-", "--", ":")):
            rows = [r for r in report["results"] if r["kind"] == kind and r["setting"] == setting]
            x = [r["clients"] for r in rows]
            axes[0].plot(x, [r["requests_per_s"] for r in rows], style, color=colour,
                         marker="o", label=f"{kind}, {setting}")  # fmt: skip
            axes[1].plot(x, [r["p99_ms"] for r in rows], style, color=colour, marker="o")
    for ax, title in zip(axes, ("requests/s", "p99 latency (ms)")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(CLIENTS, [str(c) for c in CLIENTS])
        ax.set_xlabel("concurrent clients")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[1].set_yscale("log")
    axes[0].legend(fontsize=8)
    index = report["index"]
    fig.suptitle(
        f"hashkit serve on 127.0.0.1, {index['source']} index of {index['codes']:,} "
        f"{index['bits']}-bit codes, k={report['k']}"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--index", help="the index to serve (default: a synthetic one)")
    parser.add_argument("--images", help="folder of PNG query images (with --index)")
    parser.add_argument("--out", default="benchmarks/serve", help="folder for the results")
    parser.add_argument("--seconds", type=float, default=5.0, help="per cell")
    parser.add_argument("--warmup", type=float, default=1.0, help="per kind and setting")
    parser.add_argument("--max-requests", type=int, default=50000, help="per cell")
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--note", default="", help="a line about the machine's state")
    args = parser.parse_args()
    if args.index and not args.images:
        parser.error("--index needs --images (a folder of PNG query images)")
    report = run(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "serve_load.json").write_text(json.dumps(report, indent=2) + "\n")
    write_markdown(report, out / "serve_load.md")
    plot(report, out / "serve_load.png")
    for what, got, ok in targets(report):
        print(f"{'met' if ok else 'NOT met'}: {what}: {got}")


if __name__ == "__main__":
    main()
