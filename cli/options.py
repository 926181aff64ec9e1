"""Options shared by several commands, and the glue that turns them into a dataset + split."""

from __future__ import annotations

import contextlib
import functools
import math
import os

import click

from hashkit.metrics import MAX_K  # noqa: F401  (re-exported: -k and --top-k bounds)

DEFAULT_DATA = "fashion-mnist"

# FAISS takes its parameters (k, nlist, nprobe, efSearch, nflip, ...) as 32-bit C ints: a
# larger value is refused while parsing rather than overflowing inside FAISS.
MAX_INT = 2**31 - 1
# The largest k a command accepts (-k, --top-k): MAX_K (2^31 - 1, FAISS's C int), from
# hashkit.metrics.
# HNSW's degree M: memory grows with M per stored code; 16 to 64 is usual.
MAX_HNSW_M = 1024
# Seeds go to numpy (non-negative) and torch (at most 64 bits): 32 bits suit both.
MAX_SEED = 2**32 - 1


class FiniteFloat(click.FloatRange):
    """A FloatRange that also refuses nan and infinity (which every range comparison lets
    through), so ``--lr nan`` is a usage error instead of a diverged training run."""

    name = "finite float"

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number


class Device(click.ParamType):
    """A torch device string: auto (CUDA when present, else the CPU), cpu, cuda, cuda:N or
    mps. Whether that device exists is checked when it is first used (exit 1 if not)."""

    name = "device"

    def convert(self, value, param, ctx):
        from hashkit.device import check_device_name
        from hashkit.errors import HashkitError

        try:
            return check_device_name(str(value).strip().lower())
        except HashkitError as exc:
            self.fail(str(exc), param, ctx)

    def get_metavar(self, param, ctx=None) -> str:
        return "auto|cpu|cuda[:N]|mps"


class FilePath(click.Path):
    """click.Path whose refusals (a missing file, a folder where a file is expected, an
    unreadable file) are file errors by the rule of docs/cli.md: one ``hashkit: error:`` line
    and exit 1, found before any work starts, rather than a usage error (exit 2).

    ``output=True`` marks a file hashkit writes: since it replaces the file whole (a
    temporary file renamed over it), an existing device, pipe or socket there is refused
    rather than replaced by a regular file.
    """

    def __init__(self, *, output: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        self.output = output

    def convert(self, value, param, ctx):
        path = super().convert(value, param, ctx)
        if self.output and os.path.exists(path) and not os.path.isfile(path):
            self.fail(
                f"{self.name.title()} {click.format_filename(path)!r} is not a regular file; "
                "hashkit replaces its output files whole, so it cannot write to a device or a "
                "pipe",
                param,
                ctx,
            )
        return path

    def fail(self, message: str, param=None, ctx=None):
        from hashkit.cli.main import CommandError

        hint = param.get_error_hint(ctx) if param is not None else "path"
        raise CommandError(f"{hint}: {message[:1].lower()}{message[1:].rstrip('.')}")


def data_options(func=None, *, model_defaults: bool = False):
    """--data, --root, --protocol, --split, --split-seed: the same on train, encode, bench and
    export-images. ``@data_options(model_defaults=True)`` on commands whose --model fills in
    what is not given from the model's training (encode, bench): their help says so."""
    if func is None:
        return functools.partial(data_options, model_defaults=model_defaults)
    or_model = ", or the model's" if model_defaults else ""
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
            type=FilePath(file_okay=False),
            help="Folder holding the dataset's files, looked in first (then $HASHKIT_DATA, "
            "then system paths).",
        ),
        click.option(
            "--protocol",
            type=click.Choice(["reduced", "full", "unseen"]),
            default=None,
            help="Split into training, query and database images: reduced, full, or unseen "
            "(train on some classes, search among the others; docs/method.md, docs/baselines.md)"
            f"  [default: reduced{or_model}]",
        ),
        click.option(
            "--split",
            "split_file",
            default=None,
            type=FilePath(exists=True, dir_okay=False),
            help="An .npz or .json file with train/query/database indices.",
        ),
        click.option(
            "--split-seed",
            type=click.IntRange(0, MAX_SEED),
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
    split_needed: bool = True,
):
    """``(dataset, split)`` from the options; missing ones come from ``defaults`` (a bundle's
    train_config), then the built-in defaults. ``unseen_classes``: names or numbers of the
    unseen protocol's unseen classes (None: the bundle's, else drawn with the split seed).
    ``split_needed=False``: the split is None unless an option names one (data too small for
    the default protocol can then still be read whole)."""
    from hashkit.cli.progress import warn_unlisted
    from hashkit.data import load_dataset
    from hashkit.data.protocol import PROTOCOLS, class_numbers, load_split, make_split

    if split_file is not None and (protocol is not None or split_seed is not None):
        given = "--protocol" if protocol is not None else "--split-seed"
        raise click.UsageError(f"{given} makes a split and --split FILE is one: give one of them")
    split_given = any(x is not None for x in (protocol, split_file, split_seed, unseen_classes))
    defaults = defaults or {}
    model_data = defaults.get("data") or defaults.get("dataset")
    if data is None or (model_data and _same_source(data, root, model_data, defaults.get("root"))):
        data = model_data or DEFAULT_DATA
        root = root or defaults.get("root")
        if split_file is None and protocol is None and split_seed is None:
            split_file = defaults.get("split_file")
    protocol = protocol or defaults.get("protocol") or "reduced"
    if protocol not in PROTOCOLS:
        protocol = "reduced"
    if split_seed is None:
        # a model trained on a split file has seed -1 (none): other data get the default seed
        split_seed = max(int(defaults.get("split_seed", 0)), 0)
    skipped: list[tuple[str, str]] = []
    dataset = load_dataset(data, root, skipped=skipped)
    warn_unlisted(skipped)
    if not (split_needed or split_given):
        return dataset, None
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


def _same_source(data: str, root: str | None, model_data: str, model_root: str | None) -> bool:
    """Whether ``data`` (with ``root``) names the data a model was trained on, as its
    train_config records them (see data_source)."""
    from hashkit.data import BUILTIN_DATASETS

    source = data_source(data, root, None)
    name, model_name = source["data"], str(model_data)
    if name.lower() in BUILTIN_DATASETS:
        name, model_name = name.lower(), model_name.lower()
    return name == model_name and (root is None or source["root"] == model_root)


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


def device_option(func):
    return click.option(
        "--device",
        type=Device(),
        default="auto",
        show_default=True,
        help="Where the network runs: auto (CUDA when present, else the CPU), cpu, cuda, "
        "cuda:N or mps.",
    )(func)


def encoding_options(func):
    """--batch-size, --workers, --strict, --device and -q: how images are decoded and encoded
    (build-index, encode, add)."""
    options = [
        click.option(
            "--batch-size",
            type=click.IntRange(1),
            default=256,
            show_default=True,
            help="Images per network batch; the progress bar counts these batches.",
        ),
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


def launch_rank() -> int:
    """This process's rank when torchrun started several (``$RANK``), else 0: ranks other
    than 0 stay quiet."""
    from hashkit.distributed import launched_by_torchrun

    return int(os.environ.get("RANK", "0")) if launched_by_torchrun() else 0


@contextlib.contextmanager
def training_processes():
    """The process group of torchrun's processes (yields this rank), or nothing for a plain
    run (yields 0)."""
    from hashkit.distributed import launched_by_torchrun, process_group

    if not launched_by_torchrun():
        yield 0
        return
    with process_group() as (rank, _world):
        yield rank
