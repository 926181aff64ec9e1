"""``hashkit build-index``."""

from __future__ import annotations

from pathlib import Path

import click

from hashkit.cli.options import MAX_HNSW_M, MAX_INT, FilePath, encoding_options
from hashkit.cli.progress import progress_factory, warn_unreadable


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
):
    """Encode a folder of images (or take a code store) and write a FAISS binary index.

    SOURCE is a folder, searched recursively for png/jpg/jpeg/bmp/webp/gif files, or a code
    store (.h5) written by `hashkit encode`. Beside OUT, OUT.json records the code store and
    model the index belongs to, and the search defaults (nprobe, ef-search, nflip).

    \b
    Examples:
      hashkit build-index images/ out.faiss --model model.pt
      hashkit build-index codes.h5 out.faiss --type ivf --nlist 1024 --nprobe 16
      hashkit build-index codes.h5 out.faiss --type hnsw --ef-search 128
      hashkit build-index codes.h5 out.faiss --factory BIVF4096_HNSW32
    """
    from hashkit.bundle import load_bundle
    from hashkit.encode import encode_files_to_store, find_images
    from hashkit.errors import HashkitError
    from hashkit.index import build_index, check_compatible, write_index
    from hashkit.store import read_store

    source_path = Path(source)
    model_path = Path(model) if model else None
    if source_path.is_dir():
        if model_path is None:
            raise HashkitError("an image folder needs --model to encode it")
        bundle = load_bundle(model_path)
        paths = find_images(source_path.resolve())
        store_path = Path(codes_path) if codes_path else Path(out).with_suffix(".h5")
        report = encode_files_to_store(
            bundle,
            paths,
            store_path,
            batch_size=batch_size,
            num_workers=workers,
            device=device,
            strict=strict,
            progress=progress_factory(quiet),
        )
        warn_unreadable(report.skipped)
        if not quiet:
            click.echo(f"encoded {report.encoded} images into {store_path}")
    else:
        store_path = source_path
    store = read_store(store_path, paths=False)
    if model_path is not None and source_path.is_file():
        bundle = load_bundle(model_path)
        check_compatible(
            bits_a=bundle.bits,
            bits_b=store.bits,
            what_a=f"model {model_path}",
            what_b=f"code store {store_path}",
            fingerprint_a=bundle.fingerprint,
            fingerprint_b=store.fingerprint,
        )
    index = build_index(
        store.codes,
        store.ids,
        store.bits,
        index_type,
        nlist=nlist,
        nprobe=nprobe,
        hnsw_m=hnsw_m,
        ef_construction=ef_construction,
        ef_search=ef_search,
        nhash=nhash,
        hash_bits=hash_bits,
        nflip=nflip,
        factory=factory,
        progress=progress_factory(quiet),
    )
    write_index(
        index,
        out,
        bits=store.bits,
        store=store_path,
        model=model_path or store.attrs.get("model_path") or None,
        model_fingerprint=store.fingerprint,
        store_uuid=str(store.attrs.get("uuid", "")),
    )
    from hashkit.index import index_type_of

    click.echo(
        f"wrote {out}: {index_type_of(index)} index of {index.ntotal} {store.bits}-bit codes"
    )
