"""The GPU benchmark: everything hashkit does on a GPU, measured against the CPU of the same
machine, in one run that ends within 8 minutes (run.sh), written as JSON + Markdown.

Sections, each written to the results as soon as it is done (a run cut short keeps them):

1. tests: the tests marked ``gpu`` (pytest -m gpu), counted from pytest's JUnit XML as passed,
   failed, errors and skipped; on a GPU machine a skipped one makes the section "incomplete",
   never passed;
2. index: GpuIndexBinaryFlat (hashkit.index.to_gpu) queries/s at 10^6, 10^7 and 10^8 random
   codes of 32 and 64 bits against the CPU IndexBinaryFlat on the same codes (k = 10; the CPU
   side gets fewer queries at the larger sizes so that it stays within the time);
3. training: one epoch of the default recipe (5,000 Fashion-MNIST images, or synthetic 28 x 28
   images of 10 classes where the dataset is not installed) on CUDA and on the CPU;
4. encoding: images/s of a folder of PNG files (encode_files_to_store, DataLoader workers) and
   of an image array (embed_arrays), on CUDA and on the CPU.

``--dry-run`` runs every section on the CPU in seconds, with small sizes and the CPU standing in
for the GPU (the stand-in is named in the results): it checks the script, not the GPU.

    benchmarks/gpu/run.sh              # on a GPU machine: benchmarks/gpu/results.{json,md}
    benchmarks/gpu/run.sh --dry-run    # anywhere: benchmarks/gpu/dry-run.{json,md}
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import hashkit  # before torch and faiss: it sets its OpenMP default

# isort: split
import numpy as np
import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
BUDGET_S = 450  # run.sh stops the run at 480 s


class Clock:
    """Seconds left of the run's budget."""

    def __init__(self, budget: float) -> None:
        self.deadline = time.monotonic() + budget

    def left(self) -> float:
        return self.deadline - time.monotonic()


def median_time(fn, *args, repeats: int = 3, **kwargs) -> tuple[float, list[float]]:
    """Median and all of ``repeats`` timed calls of ``fn(*args, **kwargs)``, after one untimed
    warm-up call."""
    fn(*args, **kwargs)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn(*args, **kwargs)
        times.append(time.perf_counter() - started)
    return statistics.median(times), times


def gpu_tests(dry_run: bool, on_gpu: bool, out: Path) -> dict:
    """Run ``pytest -m gpu`` and count its outcomes from the JUnit XML."""
    xml = out / "gpu-tests.xml"
    command = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider"]
    command += [f"--junitxml={xml}", str(REPO / "tests")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)
    counts = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0}
    names = {key: [] for key in counts}
    for case in ET.parse(xml).getroot().iter("testcase"):
        outcome = "passed"
        for tag, key in (("failure", "failed"), ("error", "errors"), ("skipped", "skipped")):
            if case.find(tag) is not None:
                outcome = key
        counts[outcome] += 1
        names[outcome].append(f"{case.get('classname')}::{case.get('name')}")
    xml.unlink()
    if counts["failed"] or counts["errors"]:
        status = "failed"
    elif counts["skipped"]:
        status = "incomplete: skipped tests are not passes" if on_gpu else "skipped: no GPU"
    else:
        status = "passed"
    return {"status": status, **counts, "tests": names, "pytest_tail": done.stdout[-1500:]}


def index_speed(dry_run: bool, on_gpu: bool, clock: Clock) -> list[dict]:
    """Queries/s of the GPU flat index (or its CPU stand-in) and the CPU flat index."""
    import faiss

    from hashkit.index import DeviceFlatIndex, to_gpu

    sizes = (10**4, 10**5) if dry_run else (10**6, 10**7, 10**8)
    rng = np.random.default_rng(0)
    rows = []
    for n in sizes:
        for bits in (32, 64):
            if clock.left() < (60 if n >= 10**8 else 20):
                rows.append({"n": n, "bits": bits, "skipped": "time budget"})
                continue
            codes = rng.integers(0, 256, (n, bits // 8), dtype=np.uint8)
            xq = rng.integers(0, 256, (1000, bits // 8), dtype=np.uint8)
            cpu = faiss.IndexBinaryFlat(bits)
            cpu.add(codes)
            if on_gpu:
                device = to_gpu(cpu)
            else:  # the stand-in: hashkit's wrapper around the CPU index itself
                device = DeviceFlatIndex(cpu, np.arange(n, dtype=np.int64))
            nq_cpu = {10**8: 16, 10**7: 100}.get(n, 1000)
            t_dev, _ = median_time(device.search, xq, 10)
            t_cpu, _ = median_time(cpu.search, xq[:nq_cpu], 10)
            D_dev, _ = device.search(xq[:nq_cpu], 10)
            D_cpu, _ = cpu.search(xq[:nq_cpu], 10)
            rows.append(
                {
                    "n": n,
                    "bits": bits,
                    "k": 10,
                    "queries_gpu": len(xq),
                    "queries_cpu": nq_cpu,
                    "qps_gpu": len(xq) / t_dev,
                    "qps_cpu": nq_cpu / t_cpu,
                    "speedup": (len(xq) / t_dev) / (nq_cpu / t_cpu),
                    "same_distances": bool(np.array_equal(D_dev, D_cpu)),
                    "cpu_threads": faiss.omp_get_max_threads(),
                }
            )
    return rows


def training_data(count: int):
    """``(dataset, training indices, name)``: Fashion-MNIST's reduced-protocol training images
    when installed, else ``count`` synthetic 28 x 28 grey images of 10 classes."""
    from hashkit.data import Dataset, load_dataset, make_split
    from hashkit.errors import DataError

    try:
        ds = load_dataset("fashion-mnist")
        return ds, make_split(ds.labels, "reduced", 0).train[:count], "fashion-mnist"
    except DataError:
        rng = np.random.default_rng(0)
        labels = np.arange(count) % 10
        base = rng.integers(0, 256, (10, 28, 28))
        noise = rng.normal(0, 40, (count, 28, 28))
        images = np.clip(base[labels] + noise, 0, 255).astype(np.uint8)
        ds = Dataset(images=images, labels=labels.astype(np.int64), name="synthetic")
        return ds, np.arange(count), "synthetic (Fashion-MNIST not installed)"


def epoch_seconds(ds, indices, device: str, dry_run: bool) -> float:
    """Wall seconds of the second epoch of train_network (the first is the warm-up)."""
    from hashkit.config import TrainConfig
    from hashkit.train import train_network

    marks: list[float] = []
    config = TrainConfig(epochs=2, device=device)
    if dry_run:
        config.batch_size, config.per_class = 50, 5

    def log(message: str) -> None:
        if message.startswith("epoch"):
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            marks.append(time.perf_counter())

    train_network(ds, indices, config, log=log)
    return marks[1] - marks[0]


def training_speed(dry_run: bool, device: str) -> dict:
    ds, indices, name = training_data(500 if dry_run else 5000)
    gpu_s = epoch_seconds(ds, indices, device, dry_run)
    cpu_s = epoch_seconds(ds, indices, "cpu", dry_run)
    return {
        "data": name,
        "images": int(len(indices)),
        "epoch_s_gpu": gpu_s,
        "epoch_s_cpu": cpu_s,
        "speedup": cpu_s / gpu_s,
        "cpu_threads": torch.get_num_threads(),
    }


def encoding_speed(dry_run: bool, device: str, tmp: Path) -> dict:
    from hashkit.bundle import Bundle
    from hashkit.data.export import export_images
    from hashkit.encode import embed_arrays, encode_files_to_store, find_images
    from hashkit.models import HashNet, NetworkConfig

    count = 500 if dry_run else 10000
    ds, _, name = training_data(count)
    indices = np.arange(count)
    export_images(ds, indices, tmp / "images")
    paths = find_images(tmp / "images")
    config = NetworkConfig(bits=32, input_size=28, channels=1)
    torch.manual_seed(0)
    bundle = Bundle(config, HashNet(config).state_dict(), np.eye(32, dtype=np.float32))
    workers = min(8, max(1, (os.cpu_count() or 2) - 1))
    result = {"data": name, "images": len(paths), "workers": workers}
    for label, dev in (("gpu", device), ("cpu", "cpu")):
        seconds, _ = median_time(
            encode_files_to_store,
            *(bundle, paths, tmp / f"{label}.h5"),
            repeats=2,
            num_workers=workers,
            device=dev,
        )
        result[f"files_images_per_s_{label}"] = len(paths) / seconds
        net = bundle.build_network(dev)
        seconds, _ = median_time(embed_arrays, net, ds.images[indices], device=dev)
        result[f"array_images_per_s_{label}"] = count / seconds
    result["files_speedup"] = result["files_images_per_s_gpu"] / result["files_images_per_s_cpu"]
    result["array_speedup"] = result["array_images_per_s_gpu"] / result["array_images_per_s_cpu"]
    return result


def markdown(results: dict) -> str:
    gpu = "GPU" if not results["dry_run"] else "stand-in (CPU)"
    title = " (dry run: CPU stand-ins, not GPU figures)" if results["dry_run"] else ""
    lines = [
        "# GPU benchmark" + title,
        "",
        f"Command: `{results['command']}`",
        "",
        f"Machine: {results['machine']}; GPU: {results['gpu']}; total {results['seconds']:.0f} s.",
        "",
    ]
    tests = results.get("tests")
    if tests:
        lines += [
            f"## GPU-marked tests: {tests['status']}",
            "",
            f"passed {tests['passed']}, failed {tests['failed']}, errors {tests['errors']}, "
            f"skipped {tests['skipped']}",
            "",
        ]
    if "index" in results:
        lines += [
            f"## Flat index, k = 10: {gpu} vs CPU queries/s",
            "",
            "| codes | bits | queries (gpu / cpu) | qps " + gpu + " | qps CPU | speed-up | "
            "same distances |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in results["index"]:
            if "skipped" in r:
                lines.append(f"| {r['n']:,} | {r['bits']} | skipped: {r['skipped']} | | | | |")
                continue
            lines.append(
                f"| {r['n']:,} | {r['bits']} | {r['queries_gpu']} / {r['queries_cpu']} | "
                f"{r['qps_gpu']:,.0f} | {r['qps_cpu']:,.0f} | {r['speedup']:.1f}x | "
                f"{r['same_distances']} |"
            )
        lines.append("")
    if "training" in results:
        t = results["training"]
        lines += [
            f"## Training: one epoch ({t['images']:,} images, {t['data']})",
            "",
            f"{gpu}: {t['epoch_s_gpu']:.2f} s; CPU ({t['cpu_threads']} threads): "
            f"{t['epoch_s_cpu']:.2f} s; speed-up {t['speedup']:.1f}x",
            "",
        ]
    if "encoding" in results:
        e = results["encoding"]
        lines += [
            f"## Encoding images/s ({e['images']:,} images, {e['data']}, {e['workers']} workers)",
            "",
            f"| input | {gpu} | CPU | speed-up |",
            "|---|---|---|---|",
            f"| PNG files | {e['files_images_per_s_gpu']:,.0f} | "
            f"{e['files_images_per_s_cpu']:,.0f} | {e['files_speedup']:.1f}x |",
            f"| uint8 array | {e['array_images_per_s_gpu']:,.0f} | "
            f"{e['array_images_per_s_cpu']:,.0f} | {e['array_speedup']:.1f}x |",
            "",
        ]
    for section, error in results.get("errors", {}).items():
        lines += [f"## {section}: error", "", "```", error, "```", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="CPU stand-ins, small sizes")
    parser.add_argument("--out", type=Path, default=HERE, help="folder for the results")
    args = parser.parse_args()
    clock = Clock(BUDGET_S)
    started = time.perf_counter()
    on_gpu = torch.cuda.is_available()
    if not on_gpu and not args.dry_run:
        raise SystemExit("run.py: torch sees no CUDA GPU here; use --dry-run to check the script")
    device = "cuda" if on_gpu and not args.dry_run else "cpu"
    stem = "dry-run" if args.dry_run else "results"
    results = {
        "command": " ".join(["benchmarks/gpu/run.sh", *sys.argv[1:]]),
        "dry_run": args.dry_run,
        "hashkit_version": hashkit.__version__,
        "torch": torch.__version__,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "gpu": torch.cuda.get_device_name(0) if on_gpu else "none (CPU stand-ins)",
        "errors": {},
    }

    def save() -> None:
        results["seconds"] = time.perf_counter() - started
        (args.out / f"{stem}.json").write_text(json.dumps(results, indent=1))
        (args.out / f"{stem}.md").write_text(markdown(results))

    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        sections = {
            "tests": lambda: gpu_tests(args.dry_run, on_gpu, Path(tmp)),
            "index": lambda: index_speed(args.dry_run, device == "cuda", clock),
            "training": lambda: training_speed(args.dry_run, device),
            "encoding": lambda: encoding_speed(args.dry_run, device, Path(tmp)),
        }
        for name, section in sections.items():
            if clock.left() < 30:
                results["errors"][name] = "not run: time budget"
                continue
            try:
                results[name] = section()
            except Exception as exc:  # noqa: BLE001 - one failing section must not lose the rest
                results["errors"][name] = f"{type(exc).__name__}: {exc}"
            save()
            print(f"{name}: done at {time.perf_counter() - started:.0f} s", flush=True)
    save()
    print(markdown(results))


if __name__ == "__main__":
    main()
