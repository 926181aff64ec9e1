"""``hashkit compact``."""

from __future__ import annotations

import click

from hashkit.cli.index import no_wait_option, say_waiting
from hashkit.cli.options import FilePath


@click.command("compact")
@click.argument("store", metavar="CODES.h5", type=FilePath(exists=True, dir_okay=False))
@no_wait_option
def compact_command(store, no_wait):
    """Merge the segments of a code store into one file, in place.

    `hashkit add` grows a store by writing a new segment file (in CODES.h5.d/) each time;
    compacting rewrites the store as a single file with the same rows, ids and attributes
    (indexes built from it still match it) and removes the segments. The store is replaced
    atomically, under its lock.

    \b
    Example:
      hashkit compact codes.h5
    """
    from hashkit.segments import compact_store

    merged, rows = compact_store(store, wait=not no_wait, on_wait=say_waiting)
    if merged:
        click.echo(f"compacted {store}: {merged} segments into one file of {rows} codes")
    else:
        click.echo(f"{store} is already one file ({rows} codes)")
