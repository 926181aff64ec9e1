"""``hashkit train``."""

from __future__ import annotations

import click

from hashkit.cli.options import data_options, device_option, load_data, quiet_option
from hashkit.cli.progress import progress_factory
from hashkit.config import DEFAULT_AUGMENT


@click.command("train")
@data_options
@click.option(
    "--bits", type=click.IntRange(1, 1024), default=32, show_default=True, help="Code length."
)
@click.option(
    "--loss",
    type=click.Choice(["spring", "margin", "likelihood"]),
    default="spring",
    show_default=True,
    help="Triplet loss on the sphere.",
)
@click.option(
    "--alpha",
    type=float,
    default=None,
    help="Margin of the margin (default 1) or likelihood (default 0.5) loss.",
)
@click.option(
    "--rotation",
    type=click.Choice(["random-search", "itq", "none"]),
    default="random-search",
    show_default=True,
    help="How R in b = sgn(Rh) is chosen.",
)
@click.option(
    "--init",
    "rotation_init",
    type=click.Choice(["identity", "itq"]),
    default="identity",
    show_default=True,
    help="Start of the random search.",
)
@click.option(
    "--rotation-steps",
    type=click.IntRange(0),
    default=800,
    show_default=True,
    help="Random-search steps (T).",
)
@click.option(
    "--backbone",
    type=click.Choice(["small-cnn", "resnet18", "resnet50", "alexnet", "vgg16"]),
    default="small-cnn",
    show_default=True,
)
@click.option(
    "--pretrained",
    default=None,
    metavar="PATH|cache",
    help="ImageNet weights for a torchvision backbone: a local .pth file, or 'cache' "
    "for the torchvision cache. Nothing is downloaded.",
)
@click.option("--epochs", type=click.IntRange(1), default=30, show_default=True)
@click.option("--batch-size", type=click.IntRange(2), default=100, show_default=True)
@click.option("--lr", type=float, default=1e-3, show_default=True, help="Adam learning rate.")
@click.option(
    "--augment",
    type=click.Choice(["none", "crop", "crop-flip", "affine"]),
    default=DEFAULT_AUGMENT,
    show_default=True,
    help="Augmentation of training images: random crops (shifts), flips, small affine maps.",
)
@click.option("--no-augment", is_flag=True, help="Same as --augment none.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the training run.")
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
    type=click.Path(dir_okay=False),
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
    backbone,
    pretrained,
    epochs,
    batch_size,
    lr,
    augment,
    no_augment,
    seed,
    workers,
    device,
    out,
    quiet,
):
    """Train an SDSH model and write its bundle.

    \b
    Examples:
      hashkit train --data fashion-mnist --bits 32 --out model.pt
      hashkit train --data cifar10 --root ~/data/cifar --bits 12 --loss margin --rotation itq
      hashkit train --data images/ --bits 64 --epochs 10 --out model.pt
    """
    from hashkit.bundle import save_bundle
    from hashkit.train import TrainConfig, train

    dataset, split = load_data(data, root, protocol, split_file, split_seed)
    say = (lambda _m: None) if quiet else (lambda m: click.echo(m, err=True))
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
        lr=lr,
        augment="none" if no_augment else augment,
        seed=seed,
        device=device,
        rotation=rotation,
        rotation_init=rotation_init,
        rotation_steps=rotation_steps,
        num_workers=workers,
    )
    result = train(dataset, split, config, progress=progress_factory(quiet), log=say)
    fingerprint = save_bundle(result.bundle, out)
    m = result.metrics
    if "map_sign" in m:
        click.echo(
            f"mAP (query vs database, whole database): sgn(h) {m['map_sign']:.4f}  "
            f"sgn(Rh) {m['map_rotated']:.4f}"
        )
    click.echo(f"wrote {out} ({bits} bits, sha256 {fingerprint[:12]})")
