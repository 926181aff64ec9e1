"""``hashkit build-index``."""

from __future__ import annotations

import click

from hashkit.cli.options import MAX_HNSW_M, MAX_INT, FilePath, encoding_options
from hashkit.cli.progress import log_factory, progress_factory, warn_unlisted, warn_unreadable


def no_wait_option(func):
    """--no-wait: fail at once when another writer holds the index, instead of waiting."""
    return click.option(
        "--no-wait",
        is_flag=True,
        help="Fail at once if another add or build-index is writing the index, instead of "
        "waiting for it.",
    )(func)


def say_waiting(message: str) -> None:
    """Tell the user why nothing happens while another writer holds the lock."""
    click.echo(f"hashkit: {message}", err=True)


def index_options(func):
    """--type and the build/search parameters of each index type."""
    options = [
        click.option(
            "--type",
            "index_type",
            type=click.Choice(["flat", "ivf", "hnsw", "multihash"]),
            default="flat",
            show_default=True,
            help="flat: exact IndexBinaryFlat; ivf: IndexBinaryIVF; hnsw: IndexBinaryHNSW; "
            "multihash: IndexBinaryMultiHash (short codes, near duplicates).",
        ),
        click.option(
            "--factory",
            default=None,
            metavar="STRING",
            help="Any faiss.index_binary_factory string instead of --type, e.g. BIVF1024_HNSW32.",
        ),
        click.option(
            "--nlist",
            type=click.IntRange(1, MAX_INT),
            default=None,
            help="IVF lists  [default: about sqrt(N)]",
        ),
        click.option(
            "--nprobe",
            type=click.IntRange(1, MAX_INT),
            default=None,
            help="IVF lists visited per query, stored as the search default  [default: nlist/16]",
        ),
        click.option(
            "--hnsw-m",
            type=click.IntRange(2, MAX_HNSW_M),
            default=32,
            show_default=True,
            help="HNSW degree M (memory grows with it; 16 to 64 is usual).",
        ),
        click.option(
            "--ef-construction",
            type=click.IntRange(1, MAX_INT),
            default=40,
            show_default=True,
            help="HNSW candidates while building.",
        ),
        click.option(
            "--ef-search",
            type=click.IntRange(1, MAX_INT),
            default=64,
            show_default=True,
            help="HNSW candidates per query, stored as the search default.",
        ),
        click.option(
            "--nhash",
            type=click.IntRange(1, MAX_INT),
            default=None,
            help="Multi-hash tables  [default: bits / hash bits]",
        ),
        click.option(
            "--hash-bits",
            type=click.IntRange(1, 64),
            default=None,
            help="Bits per multi-hash key  [default: about log2(N), 8..32]",
        ),
        click.option(
            "--nflip",
            type=click.IntRange(0, MAX_INT),
            default=1,
            show_default=True,
            help="Multi-hash bit flips probed, stored as the search default.",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


@click.command("build-index")
@click.argument("source", type=FilePath(exists=True))
@click.argument("out", type=FilePath(dir_okay=False, output=True))
@click.option(
    "--model",
    "model",
    type=FilePath(dir_okay=False),
    default=None,
    help="Model bundle that encodes the images (needed for an image folder).",
)
@click.option(
    "--codes",
    "codes_path",
    type=FilePath(dir_okay=False, output=True),
    default=None,
    help="Code store to write for an image folder  [default: OUT with .h5]",
)
@index_options
@encoding_options
@no_wait_option
@click.option(
    "--resume",
    is_flag=True,
    help="Continue encoding a folder after a crash, kill or Ctrl-C: the codes saved in "
    "CODES.h5.partial/ are kept, the rest encoded.",
)
def build_index_command(
    source,
    out,
    model,
    codes_path,
    index_type,
    factory,
    nlist,
    nprobe,
    hnsw_m,
    ef_construction,
    ef_search,
    nhash,
    hash_bits,
    nflip,
    batch_size,
    workers,
    strict,
    device,
    quiet,
    no_wait,
    resume,
):
    """Encode a folder of images (or take a code store) and write a FAISS binary index.

    SOURCE is a folder, searched recursively for images (png, jpg, gif, webp, tiff...), or a code
    store (.h5) written by `hashkit encode`. Beside OUT, OUT.json records the code store and
    model the index belongs to, and the search defaults (nprobe, ef-search, nflip). The
    store, the index and the sidecar are replaced together, or not at all; while another
    add or build-index writes OUT, this one waits (or fails with --no-wait). While a folder
    is encoded, the codes made so far are saved about once a minute in CODES.h5.partial/;
    after a crash the same command with --resume continues from them.

    \b
    Examples:
      hashkit build-index images/ out.faiss --model model.pt
      hashkit build-index images/ out.faiss --model model.pt --resume    # after a crash
      hashkit build-index codes.h5 out.faiss --type ivf --nlist 1024 --nprobe 16
      hashkit build-index codes.h5 out.faiss --type hnsw --ef-search 128
      hashkit build-index codes.h5 out.faiss --factory BIVF4096_HNSW32
    """
    from click.core import ParameterSource

    from hashkit.index import create_index

    if factory is not None:
        if not factory.strip():
            raise click.UsageError("--factory is empty: give a factory string, or leave it out")
        ctx = click.get_current_context()
        if ctx.get_parameter_source("index_type") != ParameterSource.DEFAULT:
            raise click.UsageError("--factory replaces --type: give one of them")

    report = create_index(
        source,
        out,
        model=model,
        codes=codes_path,
        index_type=index_type,
        factory=factory,
        nlist=nlist,
        nprobe=nprobe,
        hnsw_m=hnsw_m,
        ef_construction=ef_construction,
        ef_search=ef_search,
        nhash=nhash,
        hash_bits=hash_bits,
        nflip=nflip,
        batch_size=batch_size,
        num_workers=workers,
        device=device,
        strict=strict,
        progress=progress_factory(quiet),
        wait=not no_wait,
        on_wait=say_waiting,
        resume=resume,
        note=log_factory(quiet),
    )
    if report.encoded is not None:
        warn_unlisted(report.unlisted)
        warn_unreadable(report.skipped)
        if not quiet:
            click.echo(f"encoded {report.encoded} images into {report.store_path}")
    click.echo(f"wrote {out}: {report.type} index of {report.count} {report.bits}-bit codes")
