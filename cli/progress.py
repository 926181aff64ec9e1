"""Progress bars for the command line: shown on a terminal, silent in pipes, CI and --quiet."""

from __future__ import annotations

import functools
import sys

from tqdm.auto import tqdm


def progress_factory(quiet: bool = False):
    """A tqdm factory for hashkit library functions (``progress(iterable, total=, desc=)``).

    ``disable=None`` makes tqdm draw only when stderr is a terminal.
    """
    return functools.partial(
        tqdm, disable=True if quiet else None, file=sys.stderr, dynamic_ncols=True, leave=False
    )
