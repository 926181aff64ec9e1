"""``hashkit export milvus`` (the ``export`` group: a code store into another engine)."""

from __future__ import annotations

import os

import click

from hashkit.cli.options import FilePath, quiet_option
from hashkit.cli.progress import progress_factory


@click.group("export")
def export_group() -> None:
    """Export a code store into another search engine.

    \b
    Examples:
      hashkit export milvus out.h5 --uri codes.db --collection images
    """


@export_group.command("milvus")
@click.argument("store", metavar="STORE", type=FilePath(exists=True, dir_okay=False))
@click.option(
    "--uri",
    required=True,
    help="A local file ending in .db (embedded Milvus Lite) or a server, e.g. "
    "http://localhost:19530.",
)
@click.option("--collection", required=True, help="Collection name (created when missing).")
@click.option(
    "--index",
    "index_type",
    type=click.Choice(["bin_flat", "bin_ivf_flat"]),
    default=None,
    help="Index of a new collection; Milvus Lite has bin_flat only  [default: bin_flat]",
)
@click.option(
    "--nlist",
    type=click.IntRange(1, 65536),
    default=None,
    help="IVF lists of a new bin_ivf_flat collection  [default: about sqrt(N)]",
)
@click.option(
    "--batch-size",
    type=click.IntRange(1, 16384),
    default=10000,
    show_default=True,
    help="Rows read and inserted at a time.",
)
@quiet_option
def export_milvus_command(store, uri, collection, index_type, nlist, batch_size, quiet):
    """Copy a code store into a Milvus collection, for search beyond one machine.

    Codes become binary vectors (metric HAMMING) with the store's ids as primary keys, and
    paths and labels as fields.

    Run it again after an interruption, or after `hashkit add` grew the store: rows already
    in the collection are skipped, so it ends with exactly the store's rows. A collection of
    other bits, another model or another store is refused. Search it with
    `hashkit search --milvus URI --collection NAME`. A server's credentials (user:password
    or an API key) are read from $MILVUS_TOKEN.

    \b
    Examples:
      hashkit export milvus out.h5 --uri codes.db --collection images
      hashkit export milvus out.h5 --uri http://localhost:19530 --collection images \\
          --index bin_ivf_flat --nlist 4096
    """
    from hashkit.export.milvus import export_to_milvus

    report = export_to_milvus(
        store,
        uri,
        collection,
        index_type=index_type,
        nlist=nlist,
        batch_size=batch_size,
        token=os.environ.get("MILVUS_TOKEN", ""),
        progress=progress_factory(quiet),
    )
    skipped = f", {report.skipped} already there" if report.skipped else ""
    click.echo(
        f"{'created' if report.created else 'updated'} collection {collection} at {uri}: "
        f"inserted {report.inserted}{skipped}; it holds {report.count} code(s)"
    )
