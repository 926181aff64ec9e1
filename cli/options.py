"""Options shared by several commands, and the glue that turns them into a dataset + split."""

from __future__ import annotations

import click

DEFAULT_DATA = "fashion-mnist"


def data_options(func=None, *, from_model: bool = True):
    """--data, --root, --protocol, --split, --split-seed: the same on train, encode, bench and
    export-images. ``from_model``: the command reads missing values from a model bundle's
    training options, and its help says so (``@data_options(from_model=False)`` otherwise)."""
    if func is None:
        return lambda f: data_options(f, from_model=from_model)
    or_model = ", or the model's" if from_model else ""
    options = [
        click.option(
            "--data",
            default=None,
            metavar="DATA",
            help="Built-in dataset (fashion-mnist, mnist, cifar10, nus-wide), an image "
            "folder (one sub-folder per class) or a list file  "
            f"[default: {DEFAULT_DATA}{or_model}]",
        ),
        click.option(
            "--root",
            default=None,
            type=click.Path(file_okay=False),
            help="Folder holding the dataset's files, looked in first (then $HASHKIT_DATA, "
            "then system paths).",
        ),
        click.option(
            "--protocol",
            type=click.Choice(["reduced", "full", "unseen"]),
            default=None,
            help="reduced, full, or unseen (train on some classes, search among the others; "
            f"docs/baselines.md)  [default: reduced{or_model}]",
        ),
        click.option(
            "--split",
            "split_file",
            default=None,
            type=click.Path(exists=True, dir_okay=False),
            help="An .npz or .json file with train/query/database indices.",
        ),
        click.option(
            "--split-seed",
            type=int,
            default=None,
            help=f"Seed of the protocol split  [default: 0{or_model}]",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def load_data(
    data: str | None,
    root: str | None,
    protocol: str | None,
    split_file: str | None,
    split_seed: int | None,
    defaults: dict | None = None,
    unseen_classes: list[str] | None = None,
):
    """``(dataset, split)`` from the options; missing ones come from ``defaults`` (a bundle's
    train_config), then the built-in defaults. ``unseen_classes``: names or numbers of the
    unseen protocol's unseen classes (None: the bundle's, else drawn with the split seed)."""
    from hashkit.cli.progress import warn_unlisted
    from hashkit.data import load_dataset
    from hashkit.data.protocol import PROTOCOLS, class_numbers, load_split, make_split

    defaults = defaults or {}
    if data is None:
        data = defaults.get("data") or defaults.get("dataset") or DEFAULT_DATA
        root = root or defaults.get("root")
        if split_file is None and protocol is None and split_seed is None:
            split_file = defaults.get("split_file")
    protocol = protocol or defaults.get("protocol") or "reduced"
    if protocol not in PROTOCOLS:
        protocol = "reduced"
    split_seed = split_seed if split_seed is not None else defaults.get("split_seed", 0)
    skipped: list[tuple[str, str]] = []
    dataset = load_dataset(data, root, skipped=skipped)
    warn_unlisted(skipped)
    if split_file:
        split = load_split(split_file, len(dataset))
    else:
        numbers = None
        if unseen_classes is not None:
            numbers = class_numbers(unseen_classes, dataset.class_names)
        elif protocol == "unseen" and protocol == defaults.get("protocol"):
            numbers = defaults.get("unseen_classes")
        split = make_split(dataset.labels, protocol, split_seed, unseen_classes=numbers)
    return dataset, split


def data_source(data: str | None, root: str | None, split_file: str | None) -> dict:
    """How to load the same data and split again, for a bundle's ``train_config``: a path is
    made absolute, a built-in name kept; ``split_file`` absolute or None."""
    from pathlib import Path

    from hashkit.data import BUILTIN_DATASETS

    data = data or DEFAULT_DATA
    if data.lower() not in BUILTIN_DATASETS:
        data = str(Path(data).resolve())
    return {
        "data": data,
        "root": None if root is None else str(Path(root).resolve()),
        "split_file": None if split_file is None else str(Path(split_file).resolve()),
    }


def quiet_option(func):
    return click.option("-q", "--quiet", is_flag=True, help="No progress bars or per-step lines.")(
        func
    )


def _check_device(ctx, param, value):
    """A misspelt device is a usage error; whether the machine has it is checked on use."""
    from hashkit.device import check_device_name
    from hashkit.errors import HashkitError

    try:
        return check_device_name(value)
    except HashkitError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from None


def device_option(func):
    return click.option(
        "--device",
        default="auto",
        show_default=True,
        callback=_check_device,
        help="auto (CUDA when present), cpu, cuda, cuda:N or mps.",
    )(func)


def encoding_options(func):
    """--batch-size, --workers, --strict, --device and -q: how images are decoded and encoded
    (build-index, encode, add)."""
    options = [
        click.option("--batch-size", type=click.IntRange(1), default=256, show_default=True),
        click.option(
            "--workers",
            type=click.IntRange(0),
            default=0,
            show_default=True,
            help="DataLoader worker processes decoding images.",
        ),
        click.option(
            "--strict", is_flag=True, help="Fail on an unreadable image instead of skipping it."
        ),
        device_option,
        quiet_option,
    ]
    for option in reversed(options):
        func = option(func)
    return func
