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


def log_lines(quiet: bool = False):
    """A ``log`` callback for hashkit library functions: each message on its own stderr line,
    written with tqdm.write so that it does not break a bar being drawn; silent with --quiet."""
    if quiet:
        return lambda _message: None
    return lambda message: tqdm.write(message, file=sys.stderr)
