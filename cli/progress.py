"""Progress for the command line: bars shown on a terminal (silent in pipes, CI and --quiet),
log lines printed above them, and the line that reports skipped images."""

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


def log_factory(quiet: bool = False):
    """A ``log(message)`` for hashkit library functions: one stderr line per message, written
    above any progress bar (``tqdm.write``) so that a bar never overwrites it; silent with
    ``quiet``. Control characters (a newline in a path) are escaped."""
    from hashkit.cli.main import one_line

    if quiet:
        return lambda _message: None
    stream = sys.stderr
    return lambda message: tqdm.write(one_line(str(message)), file=stream)


def warn_unreadable(skipped: list) -> None:
    """One stderr line for the images an encode skipped: ``skipped`` holds (path, reason)
    pairs, as EncodeReport.skipped does."""
    if skipped:
        from hashkit.cli.main import one_line

        example = one_line(str(skipped[0][1]))
        click.echo(f"skipped {len(skipped)} unreadable image(s), e.g. {example}", err=True)


def warn_unlisted(skipped: list) -> None:
    """One stderr line for what listing an image folder left out: ``skipped`` holds (path,
    reason) pairs of sub-folders that could not be listed and names that are not UTF-8."""
    if skipped:
        from hashkit.cli.main import one_line

        path, reason = skipped[0]
        click.echo(
            f"skipped {len(skipped)} unreadable folder(s) or file name(s), e.g. "
            f"{one_line(f'{path}: {reason}')}",
            err=True,
        )
