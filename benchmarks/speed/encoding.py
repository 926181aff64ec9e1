"""Encoding a folder of PNG files, before and after, side by side in one run.

The work: ``hashkit.encode.encode_files_to_store`` (what ``hashkit encode --model M FOLDER
OUT.h5`` runs after listing the folder) on Fashion-MNIST database images written as PNG files
by ``hashkit export-images``, on the CPU, batches of 256, with 0, 1 or 2 DataLoader workers.
Each measurement is a fresh process; its clock starts after imports, model loading and a
warm-up pass over 256 images, and stops when the store is complete (worker start-up
included). Peak memory: the largest resident set of the main process
and of any worker (getrusage), at two folder sizes.

The model is the small CNN at 32 bits with random weights whose batch-norm statistics were
set on real images (speed does not depend on the weights; the codes of both versions are
compared bit for bit). The code *before* is ``git archive BEFORE hashkit`` (versions.py).

    nice -n 5 python benchmarks/speed/encoding.py --rounds 3
    python benchmarks/speed/encoding.py --smoke
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from versions import BEFORE, REPO, child_env, package_at  # noqa: E402

WORKERS = (0, 1, 2)


def make_inputs(folder: Path, count: int) -> None:
    """``folder/images``: ``count`` Fashion-MNIST database images as PNG files (kept between
    runs), and ``folder/model.pt``."""
    import hashkit  # noqa: F401 - before torch, as the command line imports it

    # isort: split
    import numpy as np
    import torch

    from hashkit.bundle import Bundle, save_bundle
    from hashkit.data import load_dataset, make_split
    from hashkit.data.export import export_images
    from hashkit.data.torch_images import channel_stats
    from hashkit.models import HashNet, NetworkConfig

    ds = load_dataset("fashion-mnist")
    database = make_split(ds.labels, "reduced", 0).database[:count]
    export_images(ds, database, folder / "images")
    mean, std = channel_stats(ds, database[:2000])
    config = NetworkConfig(bits=32, input_size=28, channels=1, mean=list(mean), std=list(std))
    torch.manual_seed(0)
    net = HashNet(config)
    transform_mean = torch.tensor(mean).view(1, 1, 1, 1)
    transform_std = torch.tensor(std).view(1, 1, 1, 1)
    with torch.no_grad():  # batch-norm statistics of real images, as training leaves them
        for start in range(0, 2000, 200):
            x = torch.from_numpy(ds.images[database[start : start + 200]]).float()[:, None]
            net(((x / 255) - transform_mean) / transform_std)
    save_bundle(
        Bundle(config, net.state_dict(), np.eye(32, dtype=np.float32), class_names=[]),
        folder / "model.pt",
    )


def child(args: argparse.Namespace) -> None:
    """Encode the first ``--count`` images and print one JSON line."""
    import hashkit

    # isort: split
    import torch

    from hashkit.bundle import load_bundle
    from hashkit.encode import encode_files_to_store, find_images

    paths = find_images(args.inputs / "images")[: args.count]
    bundle = load_bundle(args.inputs / "model.pt")
    # a warm-up pass outside the clock: lazy imports (torchvision alone takes seconds), the
    # convolution kernels' set-up, the files in the page cache
    warm = args.store.with_name("warm-up.h5")
    encode_files_to_store(bundle, paths[:256], warm, num_workers=0, device="cpu")
    warm.unlink()
    started = time.perf_counter()
    report = encode_files_to_store(
        bundle, paths, args.store, num_workers=args.workers, device="cpu", batch_size=256
    )
    seconds = time.perf_counter() - started
    print(
        json.dumps(
            {
                "hashkit": str(Path(hashkit.__file__).parent),
                "torch_threads": torch.get_num_threads(),
                "images": report.encoded,
                "seconds": seconds,
                "images_per_s": report.encoded / seconds,
                # ru_maxrss is in KiB on Linux; RUSAGE_CHILDREN: the largest worker
                "peak_rss_main_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "peak_rss_worker_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
                / 1024,
            }
        )
    )


def run_child(tree: Path, settings: dict, *arguments: str) -> dict:
    command = [sys.executable, __file__, "--child", *arguments]
    done = subprocess.run(
        command, env=child_env(tree, **settings), capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"child failed ({tree}, {arguments}):\n{done.stderr[-3000:]}")
    lines = done.stdout.strip().splitlines()
    return json.loads(lines[-1]) if lines else {}


def compare_codes(a: Path, b: Path) -> dict:
    """How many codes of two stores of the same images differ, and by how many bits."""
    import h5py
    import numpy as np

    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        ca, cb = fa["codes"][:], fb["codes"][:]
        same_ids = bool(np.array_equal(fa["ids"][:], fb["ids"][:]))
    differing_bits = int(np.unpackbits(ca ^ cb).sum())
    return {
        "codes": int(len(ca)),
        "same_ids": same_ids,
        "codes_differing": int((ca != cb).any(axis=1).sum()),
        "bits_differing": differing_bits,
    }


def markdown(result: dict) -> str:
    lines = [
        "# Encoding a folder of PNG files: before and after (CPU)",
        "",
        f"Command: `{result['command']}`",
        "",
        f"Machine: {result['machine']}. Work: {result['work']}",
        "",
        f"Images/s at {result['count']:,} images (median over {len(result['rounds'])} rounds, "
        "range in brackets), and the after/before ratio paired within each round:",
        "",
        "| variant | " + " | ".join(f"{w} workers" for w in WORKERS) + " |",
        "|---|" + "---|" * len(WORKERS),
    ]
    for name, per_workers in result["summary"]["images_per_s"].items():
        cells = [
            f"{v['median']:.0f} ({v['range'][0]:.0f} - {v['range'][1]:.0f})"
            for v in per_workers.values()
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    for name, per_workers in result["summary"]["ratios"].items():
        cells = [
            f"**{v['median']:.2f}x** ({v['range'][0]:.2f} - {v['range'][1]:.2f})"
            for v in per_workers.values()
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"Peak resident memory (MiB), {WORKERS[-1]} workers: the main process and the largest "
        "worker, at two folder sizes:",
        "",
        "| version | images | main | worker |",
        "|---|---|---|---|",
    ]
    for row in result["memory"]:
        lines.append(
            f"| {row['version']} | {row['images']:,} | {row['peak_rss_main_mib']:.0f} | "
            f"{row['peak_rss_worker_mib']:.0f} |"
        )
    codes = result["codes_before_vs_after"]
    lines += [
        "",
        f"Codes, before vs after, same {codes['codes']:,} images: {codes['codes_differing']} "
        f"codes differ ({codes['bits_differing']} bits of {codes['codes'] * 32:,}); the ids "
        f"{'are' if codes['same_ids'] else 'are NOT'} the same. (After folds the batch norms "
        "into the convolutions: embeddings agree to about 1e-7, so a bit can flip only for a "
        "value within rounding of 0.)",
        "",
        *reading(result),
    ]
    return "\n".join(lines) + "\n"


def reading(result: dict) -> list[str]:
    """What the tables say, with their numbers."""
    ratios = result["summary"]["ratios"]
    total = ratios["after / before"]
    pipeline = ratios["after / before, OMP_WAIT_POLICY=PASSIVE"]
    span = lambda r: ", ".join(f"{w} workers {r[str(w)]['median']:.1f}x" for w in WORKERS)  # noqa: E731
    memory = {(m["version"], m["images"]): m["peak_rss_main_mib"] for m in result["memory"]}
    small, large = min(m["images"] for m in result["memory"]), result["count"]
    return [
        "## Reading",
        "",
        f"- At default settings, after / before: {span(total)} (medians of the paired "
        "ratios; the machine's load changed a lot between rounds, hence the ranges).",
        f"- With the thread setting equal (before with OMP_WAIT_POLICY=PASSIVE): "
        f"{span(pipeline)}. That part is the encoding itself: batch norms folded into the "
        "convolutions (about 1.6x the network's images/s in a side measurement), ReLU after "
        "the max-pool, one decode per image in the workers (before: the file was converted "
        "twice and each image went through the tensor transform alone), and uint8 batches.",
        f"- Memory: the main process peaks at {memory[('after', small)]:.0f} MiB for "
        f"{small:,} images and {memory[('after', large)]:.0f} MiB for {large:,} (most of it "
        "is torch itself); each worker stays at the same size.",
        "- Absolute images/s are far below the 2,000/s measured when the machine was quieter: "
        "compare the ratios, measured side by side.",
    ]


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    names = list(result["summary"]["images_per_s"])
    width = 0.8 / len(names)
    for k, name in enumerate(names):
        per_workers = result["summary"]["images_per_s"][name]
        medians = [per_workers[str(w)]["median"] for w in WORKERS]
        lows = [m - per_workers[str(w)]["range"][0] for m, w in zip(medians, WORKERS)]
        highs = [per_workers[str(w)]["range"][1] - m for m, w in zip(medians, WORKERS)]
        xs = [w + (k - (len(names) - 1) / 2) * width for w in WORKERS]
        ax.bar(xs, medians, width, yerr=[lows, highs], capsize=3, label=name)
    ax.set_xticks(list(WORKERS), [f"{w} workers" for w in WORKERS])
    ax.set_ylabel("images/s (median; bars: range)")
    ax.set_title(f"Encoding {result['count']:,} Fashion-MNIST PNG files, small CNN, CPU")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--count", type=int, default=20000, help="images encoded")
    parser.add_argument("--small", type=int, default=2000, help="smaller size, for memory")
    parser.add_argument("--before", default=BEFORE, help="commit of the code before")
    parser.add_argument(
        "--inputs",
        type=Path,
        default=Path(tempfile.gettempdir()) / "hashkit-encoding-bench",
        help="folder for the PNG files and the model (kept between runs)",
    )
    parser.add_argument("--smoke", action="store_true", help="tiny run, results not written")
    parser.add_argument("--out", type=Path, default=HERE, help="folder for encoding.{json,md,png}")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--make-inputs", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--store", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--report", action="store_true", help="rewrite md and png from json")
    args = parser.parse_args()
    if args.report:
        result = json.loads((args.out / "encoding.json").read_text())
        (args.out / "encoding.md").write_text(markdown(result))
        plot(result, args.out / "encoding.png")
        return
    if args.make_inputs:
        make_inputs(args.inputs, args.count)
        return
    if args.child:
        child(args)
        return
    command = " ".join(["nice -n 5 python benchmarks/speed/encoding.py", *sys.argv[1:]])
    if args.smoke:
        args.rounds, args.count, args.small = 1, 600, 300
        args.inputs = args.inputs.with_name(args.inputs.name + "-smoke")
    run_child(REPO, {}, "--make-inputs", "--inputs", str(args.inputs), "--count", str(args.count))
    variants = {
        "before": ("before", {}),
        "before, OMP_WAIT_POLICY=PASSIVE": ("before", {"OMP_WAIT_POLICY": "PASSIVE"}),
        "after": ("after", {}),
    }
    with tempfile.TemporaryDirectory() as tmp:
        trees = {"before": package_at(args.before, Path(tmp)), "after": REPO}

        def encode(version, settings, workers, count, store="codes.h5"):
            return run_child(
                trees[version],
                settings,
                *("--inputs", str(args.inputs), "--count", str(count)),
                *("--workers", str(workers), "--store", str(Path(tmp) / store)),
            )

        rounds = []
        for i in range(args.rounds):
            row = {}
            for name, (version, settings) in variants.items():
                for workers in WORKERS:
                    row[f"{name}|{workers}"] = encode(version, settings, workers, args.count)
                    print(f"round {i + 1} {name} {workers}: {row[f'{name}|{workers}']}", flush=True)
            rounds.append(row)
        memory = []
        for version in ("before", "after"):
            for count in (args.small, args.count):
                used = encode(version, {}, WORKERS[-1], count, f"{version}.h5")
                memory.append({"version": version, **used})
        codes = compare_codes(Path(tmp) / "before.h5", Path(tmp) / "after.h5")
    summary = {"images_per_s": {}, "ratios": {}}
    for name in variants:
        summary["images_per_s"][name] = {}
        for w in WORKERS:
            values = [r[f"{name}|{w}"]["images_per_s"] for r in rounds]
            summary["images_per_s"][name][str(w)] = {
                "median": statistics.median(values),
                "range": [min(values), max(values)],
            }
    for old in ("before", "before, OMP_WAIT_POLICY=PASSIVE"):
        label = f"after / {old}"
        summary["ratios"][label] = {}
        for w in WORKERS:
            values = [
                r[f"after|{w}"]["images_per_s"] / r[f"{old}|{w}"]["images_per_s"] for r in rounds
            ]
            summary["ratios"][label][str(w)] = {
                "median": statistics.median(values),
                "range": [min(values), max(values)],
                "per_round": values,
            }
    result = {
        "command": command,
        "before_commit": args.before,
        "after_commit": subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
        ).stdout.strip(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, shared with other jobs",
        "work": "encode_files_to_store (hashkit encode of a folder): Fashion-MNIST database "
        "PNG files (28 x 28 grey), small CNN, 32 bits, batches of 256, device cpu, torch's "
        "default threads",
        "count": args.count,
        "rounds": rounds,
        "summary": summary,
        "memory": memory,
        "codes_before_vs_after": codes,
    }
    text = markdown(result)
    print(text)
    if args.smoke:
        return
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "encoding.json").write_text(json.dumps(result, indent=1))
    (args.out / "encoding.md").write_text(text)
    plot(result, args.out / "encoding.png")


if __name__ == "__main__":
    main()
