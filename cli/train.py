"""``hashkit train``."""

from __future__ import annotations

import click

from hashkit.cli.options import (
    MAX_SEED,
    FilePath,
    FiniteFloat,
    data_options,
    data_source,
    device_option,
    load_data,
    quiet_option,
)
from hashkit.cli.progress import log_factory, progress_factory
from hashkit.config import AUGMENTATIONS, BACKBONES, LOSSES, ROTATION_INITS, ROTATIONS, TrainConfig

_DEFAULT = TrainConfig()


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
    "--loss",
    type=click.Choice(LOSSES),
    default=_DEFAULT.loss,
    show_default=True,
    help="Triplet loss on the sphere (docs/method.md, section 2).",
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
    default=_DEFAULT.rotation,
    show_default=True,
    help="How R in b = sgn(Rh) is chosen (docs/method.md, section 3).",
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
    device,
    out,
    quiet,
):
    """Train an SDSH model and write its bundle.

    The network embeds images on the unit sphere, trained with a triplet loss; the rotation R
    of the codes b = sgn(Rh) is then chosen on the training images (docs/method.md).

    \b
    Examples:
      hashkit train --data fashion-mnist --bits 32 --out model.pt
      hashkit train --data cifar10 --root ~/data/cifar --bits 12 --loss margin --rotation itq
      hashkit train --data images/ --bits 64 --epochs 10 --out model.pt
    """
    from hashkit.bundle import save_bundle
    from hashkit.encode import resolve_device
    from hashkit.train import train

    resolve_device(device)  # a device this machine lacks fails now, not after loading data
    dataset, split = load_data(data, root, protocol, split_file, split_seed)
    say = log_factory(quiet)
    say(
        f"{dataset.name}: {len(split.train)} training, {len(split.query)} query, "
        f"{len(split.database)} database images ({split.protocol} protocol)"
    )
    config = TrainConfig(
        bits=bits,
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
    )
    result = train(dataset, split, config, progress=progress_factory(quiet), log=say)
    result.bundle.train_config.update(data_source(data, root, split_file))
    fingerprint = save_bundle(result.bundle, out)
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
