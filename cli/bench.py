"""``hashkit bench``."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click

from hashkit.cli.options import (
    MAX_INT,
    MAX_K,
    FilePath,
    data_options,
    data_source,
    device_option,
    launch_rank,
    load_data,
    quiet_option,
    training_processes,
)
from hashkit.cli.progress import log_factory, progress_factory
from hashkit.cli.search import gpu_option
from hashkit.config import TrainConfig


@click.command("bench")
@click.option(
    "--bits",
    type=click.IntRange(2, 1024),
    default=32,
    show_default=True,
    help="Code length of the model trained when no --model is given.",
)
@click.option(
    "--model",
    type=FilePath(exists=True, dir_okay=False),
    default=None,
    help="Model bundle to benchmark  [default: train one with the defaults]",
)
@data_options(model_defaults=True)
@click.option(
    "--top-k",
    type=click.IntRange(1, MAX_K),
    default=None,
    help="k of mAP@k  [default: the protocol's, 5000 for multi-label data, else 1000]",
)
@click.option(
    "--nlist",
    type=click.IntRange(1, MAX_INT),
    default=None,
    help="IVF lists  [default: about sqrt(N)]",
)
@click.option(
    "--epochs",
    type=click.IntRange(1),
    default=TrainConfig.epochs,
    show_default=True,
    help="Epochs when training a model.",
)
@click.option(
    "--out",
    "out_dir",
    type=FilePath(file_okay=False),
    default="bench",
    show_default=True,
    help="Folder for bench.json and bench.md (and model.pt).",
)
@gpu_option
@device_option
@quiet_option
def bench_command(
    bits,
    model,
    data,
    root,
    protocol,
    split_file,
    split_seed,
    top_k,
    nlist,
    epochs,
    out_dir,
    gpu,
    device,
    quiet,
):
    """Measure mAP, mAP@k and search speed (flat and IVF) of a model on a protocol split.

    With --model, the data and split default to the ones the model was trained on. What each
    number means: docs/method.md, section 4.

    \b
    Examples:
      hashkit bench --bits 32
      hashkit bench --model model.pt --out bench/
      hashkit bench --data cifar10 --root ~/data/cifar --bits 12 --protocol full
    """
    from hashkit.bench import run_benchmark, write_benchmark
    from hashkit.bundle import load_bundle, save_bundle
    from hashkit.encode import resolve_device
    from hashkit.train import train

    resolve_device(device)  # a device this machine lacks fails now, not after loading data
    quiet = quiet or launch_rank() > 0
    say = log_factory(quiet)
    progress = progress_factory(quiet)
    if model is not None:
        bundle = load_bundle(model)
        dataset, split = load_data(
            data, root, protocol, split_file, split_seed, defaults=bundle.train_config
        )
    else:
        dataset, split = load_data(data, root, protocol, split_file, split_seed)
        say(f"no --model: training a {bits}-bit model with the default recipe")
        with training_processes() as rank:  # data-parallel when launched by torchrun
            result = train(
                dataset,
                split,
                TrainConfig(bits=bits, epochs=epochs, device=device),
                progress=progress,
                log=say,
                evaluate=False,
            )
        if rank > 0:
            return  # rank 0 alone benchmarks the model all ranks trained
        bundle = result.bundle
        bundle.train_config.update(data_source(data, root, split_file))
        model_path = Path(out_dir) / "model.pt"
        save_bundle(bundle, model_path)
        say(f"wrote {model_path}")
    say(f"benchmarking on {len(split.query)} queries x {len(split.database)} database images")
    result = run_benchmark(
        bundle,
        dataset,
        split,
        top_k=top_k,
        nlist=nlist,
        device=device,
        progress=progress,
        gpu=gpu,
    )
    command = "hashkit " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    for path in write_benchmark(result, out_dir, command):
        say(f"wrote {path}")
    k = result["top_k"]
    click.echo(
        f"mAP {result['map']:.4f}  mAP@{k} {result[f'map_at_{k}']:.4f}  "
        f"flat {result['flat']['qps_all_threads']:,.0f} queries/s"
    )
