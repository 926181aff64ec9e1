"""Progress for the command line: bars shown on a terminal (silent in pipes, CI and --quiet),
and the line that reports skipped images."""

from __future__ import annotations

import functools
import sys

import click
from tqdm.auto import tqdm


def progress_factory(quiet: bool = False):
    """A tqdm factory for hashkit library functions (``progress(iterable, total=, desc=)``).

    ``disable=None`` makes tqdm draw only when stderr is a terminal.
    """
    return functools.partial(
        tqdm, disable=True if quiet else None, file=sys.stderr, dynamic_ncols=True, leave=False
    )


def warn_unreadable(skipped: list) -> None:
    """One stderr line for the images an encode skipped: ``skipped`` holds (path, reason)
    pairs, as EncodeReport.skipped does."""
    if skipped:
        click.echo(f"skipped {len(skipped)} unreadable image(s), e.g. {skipped[0][1]}", err=True)


def warn_unlisted(skipped: list) -> None:
    """One stderr line for what listing an image folder left out: ``skipped`` holds (path,
    reason) pairs of sub-folders that could not be listed and names that are not UTF-8."""
    if skipped:
        path, reason = skipped[0]
        click.echo(
            f"skipped {len(skipped)} unreadable folder(s) or file name(s), e.g. {path}: {reason}",
            err=True,
        )
