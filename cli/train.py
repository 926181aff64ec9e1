"""``hashkit train``."""

from __future__ import annotations

import os
from pathlib import Path

import click
import numpy as np

from hashkit.cli.options import (
    MAX_SEED,
    FilePath,
    FiniteFloat,
    data_options,
    data_source,
    device_option,
    launch_rank,
    load_data,
    quiet_option,
    training_processes,
)
from hashkit.cli.progress import log_factory, progress_factory
from hashkit.config import (
    AUGMENTATIONS,
    BACKBONES,
    LOSSES,
    METHODS,
    ROTATION_INITS,
    ROTATIONS,
    TrainConfig,
)

_DEFAULT = TrainConfig()


def _split_class_list(ctx, param, value):
    """``"7,8,9"`` -> ``["7", "8", "9"]``; an empty entry or a repeated one is a usage error
    (whether the classes exist depends on the data, and is checked there)."""
    if value is None:
        return None
    items = [item.strip() for item in value.split(",")]
    if any(not item for item in items):
        raise click.BadParameter(f"{value!r} has an empty entry; e.g. 7,8,9", ctx, param)
    if len(set(items)) != len(items):
        raise click.BadParameter(f"{value!r} names a class twice", ctx, param)
    return items


@click.command("train")
@data_options
@click.option(
    "--bits",
    type=click.IntRange(2, 1024),
    default=_DEFAULT.bits,
    show_default=True,
    help="Code length.",
)
@click.option(
    "--method",
    type=click.Choice(METHODS),
    default=_DEFAULT.method,
    show_default=True,
    help="sdsh (hashkit's, with --loss) or a baseline from its paper: each brings its own "
    "network head and loss (docs/baselines.md).",
)
@click.option(
    "--loss",
    type=click.Choice(LOSSES),
    default=_DEFAULT.loss,
    show_default=True,
    help="Triplet loss on the sphere (SDSH's; --method sdsh only; docs/method.md, section 2).",
)
@click.option(
    "--alpha",
    type=FiniteFloat(min=0),
    default=_DEFAULT.alpha,
    help="Margin of the margin loss (default 1; the SDSH authors' baseline used 2) or of the "
    "likelihood loss (default 0.5). Ignored by spring.",
)
@click.option(
    "--rotation",
    type=click.Choice(ROTATIONS),
    default=None,
    help="How R in b = sgn(Rh) is chosen (docs/method.md, section 3)  [default: random-search "
    "for sdsh, none (sgn(h), as published) for the baselines]",
)
@click.option(
    "--init",
    "rotation_init",
    type=click.Choice(ROTATION_INITS),
    default=_DEFAULT.rotation_init,
    show_default=True,
    help="Start of the random search.",
)
@click.option(
    "--rotation-steps",
    type=click.IntRange(0),
    default=_DEFAULT.rotation_steps,
    show_default=True,
    help="Random-search steps (T).",
)
@click.option(
    "--rotation-queries",
    type=click.IntRange(1),
    default=_DEFAULT.rotation_queries,
    show_default=True,
    help="Training images used as queries by the search (at most a third of the set).",
)
@click.option(
    "--rotation-database",
    type=click.IntRange(1),
    default=_DEFAULT.rotation_database,
    show_default=True,
    help="Other training images the search ranks.",
)
@click.option(
    "--rotation-seed",
    type=click.IntRange(0, MAX_SEED),
    default=_DEFAULT.rotation_seed,
    help="Seed of the search and of ITQ  [default: --seed]",
)
@click.option(
    "--itq-iterations",
    type=click.IntRange(1),
    default=_DEFAULT.itq_iterations,
    show_default=True,
    help="Iterations of ITQ (for --rotation itq and --init itq).",
)
@click.option(
    "--backbone",
    type=click.Choice(BACKBONES),
    default=_DEFAULT.backbone,
    show_default=True,
    help="small-cnn for 28x28/32x32 images; torchvision networks for larger ones.",
)
@click.option(
    "--pretrained",
    default=None,
    metavar="PATH|cache",
    help="ImageNet weights for a torchvision backbone: a local .pth file, or 'cache' "
    "for the torchvision cache. Nothing is downloaded.",
)
@click.option("--epochs", type=click.IntRange(1), default=_DEFAULT.epochs, show_default=True)
@click.option(
    "--batch-size",
    type=click.IntRange(2),
    default=_DEFAULT.batch_size,
    show_default=True,
    help="Images per mini-batch; the loss uses every valid triplet inside it.",
)
@click.option(
    "--per-class",
    type=click.IntRange(2),
    default=_DEFAULT.per_class,
    show_default=True,
    help="Images of one class in a batch; --batch-size must be a multiple of it (a batch holds "
    "batch-size / per-class classes). Multi-label images count under their rarest label.",
)
@click.option(
    "--lr",
    type=FiniteFloat(min=0, min_open=True),
    default=_DEFAULT.lr,
    show_default=True,
    help="Adam learning rate.",
)
@click.option(
    "--weight-decay",
    type=FiniteFloat(min=0),
    default=_DEFAULT.weight_decay,
    show_default=True,
    help="Adam weight decay.",
)
@click.option(
    "--augment",
    type=click.Choice(AUGMENTATIONS),
    default=_DEFAULT.augment,
    show_default=True,
    help="Augmentation of training images: random crops (shifts), flips, small affine maps.",
)
@click.option("--no-augment", is_flag=True, help="Same as --augment none.")
@click.option(
    "--seed",
    type=click.IntRange(0, MAX_SEED),
    default=_DEFAULT.seed,
    show_default=True,
    help="Seed of the training run.",
)
@click.option(
    "--workers",
    type=click.IntRange(0),
    default=0,
    show_default=True,
    help="DataLoader workers for image files.",
)
@click.option(
    "--unseen-classes",
    callback=_split_class_list,
    default=None,
    metavar="C1,C2,...",
    help="With --protocol unseen: the classes held out of training, by number or name "
    "(e.g. 7,8,9)  [default: 30% of the classes, drawn with --split-seed]",
)
@click.option(
    "--val-images",
    type=click.IntRange(0),
    default=_DEFAULT.val_images,
    show_default=True,
    help="Training images held out of training as validation queries; their mAP against the "
    "other training images is logged after every epoch (0: none).",
)
@click.option(
    "--resume",
    is_flag=True,
    help="Continue the run whose checkpoint (--checkpoint) a killed or interrupted run left; "
    "it ends with the bundle the uninterrupted run would have written.",
)
@click.option(
    "--checkpoint",
    type=FilePath(dir_okay=False, output=True),
    default=None,
    help="Checkpoint written after every epoch and removed once the bundle is written  "
    "[default: --out with .ckpt, e.g. model.ckpt]",
)
@device_option
@click.option(
    "--out",
    "out",
    type=FilePath(dir_okay=False, output=True),
    default="model.pt",
    show_default=True,
    help="Model bundle to write (atomically).",
)
@quiet_option
def train_command(
    data,
    root,
    protocol,
    split_file,
    split_seed,
    bits,
    method,
    loss,
    alpha,
    rotation,
    rotation_init,
    rotation_steps,
    rotation_queries,
    rotation_database,
    rotation_seed,
    itq_iterations,
    backbone,
    pretrained,
    epochs,
    batch_size,
    per_class,
    lr,
    weight_decay,
    augment,
    no_augment,
    seed,
    workers,
    unseen_classes,
    val_images,
    resume,
    checkpoint,
    device,
    out,
    quiet,
):
    """Train a hashing model (SDSH, or a baseline with --method) and write its bundle.

    The network embeds images on the unit sphere, trained with a triplet loss; the rotation R
    of the codes b = sgn(Rh) is then chosen on the training images (docs/method.md).

    After every epoch a checkpoint (model.ckpt beside model.pt) and a line of the epoch log
    (loss, learning rate, validation mAP; model.epochs.csv.partial, renamed model.epochs.csv
    with the bundle) are written; --resume continues a run that was killed. Launched by
    torchrun, training runs data-parallel on every process (docs/scaling.md).

    \b
    Examples:
      hashkit train --data fashion-mnist --bits 32 --out model.pt
      hashkit train --data cifar10 --root ~/data/cifar --bits 12 --loss margin --rotation itq
      hashkit train --data images/ --bits 64 --epochs 10 --out model.pt
      hashkit train --method hashnet --protocol unseen --bits 32 --out hashnet.pt
      hashkit train --bits 32 --out model.pt --resume          # after a crash
      torchrun --nproc-per-node 2 -m hashkit train --bits 32 --out model.pt
    """
    from hashkit.bundle import save_bundle
    from hashkit.checkpoint import checkpoint_path_for
    from hashkit.encode import resolve_device
    from hashkit.epoch_log import epoch_log_path_for, partial_path, publish
    from hashkit.errors import HashkitError
    from hashkit.methods import get_method
    from hashkit.train import train

    quiet = quiet or launch_rank() > 0
    _check_method_options(click.get_current_context(), method, protocol, unseen_classes, split_file)
    rotation = rotation or get_method(method).rotation
    resolve_device(device)  # a device this machine lacks fails now, not after loading data
    checkpoint = checkpoint or checkpoint_path_for(out)
    epoch_log = epoch_log_path_for(out)
    _check_train_outputs(out, checkpoint, epoch_log, data, split_file)
    if not resume and os.path.exists(checkpoint):
        raise HashkitError(
            f"{checkpoint} holds an unfinished run (or is another file): continue it with "
            "--resume, or remove it"
        )
    dataset, split = load_data(
        data, root, protocol, split_file, split_seed, unseen_classes=unseen_classes
    )
    say = log_factory(quiet)
    say(
        f"{dataset.name}: {len(split.train)} training, {len(split.query)} query, "
        f"{len(split.database)} database images ({split.protocol} protocol)"
    )
    if split.unseen_classes is not None and _is_default(click.get_current_context(), "batch_size"):
        # Fewer classes to train on than a default batch holds (7 of Fashion-MNIST's 10):
        # the batch shrinks to per_class images of each seen class.
        seen = len(np.unique(dataset.labels[split.train]))
        if seen * per_class < batch_size:
            batch_size = seen * per_class
            say(f"batches of {batch_size}: {per_class} images of each of {seen} seen classes")
    config = TrainConfig(
        bits=bits,
        method=method,
        loss=loss,
        alpha=alpha,
        backbone=backbone,
        pretrained=pretrained,
        epochs=epochs,
        batch_size=batch_size,
        per_class=per_class,
        lr=lr,
        weight_decay=weight_decay,
        augment="none" if no_augment else augment,
        seed=seed,
        device=device,
        rotation=rotation,
        rotation_init=rotation_init,
        rotation_steps=rotation_steps,
        rotation_queries=rotation_queries,
        rotation_database=rotation_database,
        rotation_seed=rotation_seed,
        itq_iterations=itq_iterations,
        num_workers=workers,
        val_images=val_images,
    )
    with training_processes() as rank:
        result = train(
            dataset,
            split,
            config,
            progress=progress_factory(quiet),
            log=log_factory(quiet),
            checkpoint=checkpoint,
            resume=resume,
            epoch_log=partial_path(epoch_log),
        )
    if rank > 0:
        return
    result.bundle.train_config.update(data_source(data, root, split_file))
    fingerprint = save_bundle(result.bundle, out)
    publish(epoch_log)  # the new model's log replaces the old one's only now
    Path(checkpoint).unlink(missing_ok=True)
    m = result.metrics
    chosen = {"random-search": f"random search from {rotation_init}", "itq": "ITQ"}.get(
        rotation, "no rotation"
    )
    if "train_map_sign" in m:
        click.echo(
            f"training mAP:           sgn(h) {m['train_map_sign']:.4f}  "
            f"sgn(Rh) {m['train_map_rotated']:.4f}  (R: {chosen})"
        )
    if "map_sign" in m:
        click.echo(
            f"query vs database mAP:  sgn(h) {m['map_sign']:.4f}  "
            f"sgn(Rh) {m['map_rotated']:.4f}  (whole database)"
        )
        click.echo(
            f"query vs database mAP@{m['top_k']}: sgn(h) {m['map_at_k_sign']:.4f}  "
            f"sgn(Rh) {m['map_at_k_rotated']:.4f}"
        )
    click.echo(f"wrote {out} ({bits} bits, sha256 {fingerprint[:12]})")


def _check_train_outputs(out, checkpoint, epoch_log, data, split_file) -> None:
    """Refuse an --out or --checkpoint that is another of the run's files (the checkpoint is
    removed once the bundle is written: an --out equal to it would be removed too) or one of
    its inputs: the split file, a list file, an image of the data folder."""
    from hashkit.atomic import check_outputs
    from hashkit.epoch_log import partial_path
    from hashkit.errors import HashkitError

    outputs = {
        "the bundle (--out)": out,
        "the checkpoint (--checkpoint)": checkpoint,
        "the epoch log": epoch_log,
        "the unfinished run's epoch log": partial_path(epoch_log),
    }
    inputs = {"the split (--split)": split_file}
    if data is not None and os.path.isfile(data):
        inputs["the data (--data)"] = data
    check_outputs(outputs, inputs)
    if data is not None and os.path.isdir(data):
        folder = Path(data).resolve()
        for what, path in outputs.items():
            if Path(path).resolve().is_relative_to(folder):
                raise HashkitError(
                    f"{what} {path} is inside the data folder {data}: write it elsewhere, "
                    "so that the data stay as they are"
                )


def _is_default(ctx, name: str) -> bool:
    """True when the option ``name`` was not given (its default is in use)."""
    from click.core import ParameterSource

    return ctx.get_parameter_source(name) == ParameterSource.DEFAULT


def _check_method_options(ctx, method, protocol, unseen_classes, split_file) -> None:
    """Usage errors for options that the chosen method or protocol would silently ignore."""
    given = {name for name in ("loss", "alpha") if not _is_default(ctx, name)}
    if method != "sdsh" and given:
        raise click.UsageError(
            f"--{sorted(given)[0]} sets SDSH's loss; --method {method} trains with its paper's "
            "loss and defaults (docs/baselines.md)"
        )
    if unseen_classes is not None and (protocol != "unseen" or split_file):
        raise click.UsageError("--unseen-classes needs --protocol unseen (and no --split file)")
