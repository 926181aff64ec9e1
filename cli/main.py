"""The ``hashkit`` command group: parsing and printing only; the work is in the hashkit library.

How errors reach the user (docs/cli.md, "Errors and exit codes"):

- An option value wrong by itself (nan, out of range, an unknown choice, a bogus device) is
  refused by its Click type while the command line is parsed: Click's usage error, exit 2.
- Anything wrong with files, data or their combination is the library's HashkitError; an
  operating-system refusal about a file (missing, permission denied, a folder where a file
  was expected, disk full: see ``USER_OS_ERRORS``) is the same kind of error. Both become
  :class:`CommandError`: one line ``hashkit: error: <message>`` on stderr, exit 1.
- Ctrl-C becomes :class:`Interrupted`: one line, exit 130.

Any other exception is a bug in hashkit and keeps its traceback.
"""

from __future__ import annotations

import errno
import functools
import os

import click

from hashkit import __version__
from hashkit.errors import HashkitError

# OSError numbers that describe the user's files or machine, not a bug in hashkit. An OSError
# without one of these (h5py and faiss raise OSError for their own reasons) is not converted:
# the library turns those into HashkitError where it reads the file, naming the file.
USER_OS_ERRORS = frozenset(
    {
        errno.ENOENT,  # no such file or directory
        errno.EACCES,  # permission denied
        errno.EPERM,  # operation not permitted
        errno.EISDIR,  # is a directory
        errno.ENOTDIR,  # not a directory
        errno.EEXIST,  # file exists
        errno.ENOSPC,  # no space left on device
        errno.EDQUOT,  # disk quota exceeded
        errno.EROFS,  # read-only file system
        errno.ENAMETOOLONG,  # file name too long
        errno.ELOOP,  # too many symbolic links
        errno.EFBIG,  # file too large
        errno.EIO,  # input/output error (a failing disk)
        errno.EMFILE,  # too many open files
    }
)


class CommandError(click.ClickException):
    """An error the user can fix: printed as one line ``hashkit: error: <message>``, exit 1."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        # One line, whatever the message holds: a path with a newline must not split it.
        super().__init__(one_line(message))

    def show(self, file=None) -> None:
        click.echo(f"hashkit: error: {self.format_message()}", err=True, file=file)


class Interrupted(click.ClickException):
    """Ctrl-C: every write is atomic, so nothing was left half-written; exit 130."""

    exit_code = 130

    def __init__(self) -> None:
        super().__init__("interrupted; existing files were left as they were")

    def show(self, file=None) -> None:
        click.echo(f"hashkit: {self.format_message()}", err=True, file=file)


def one_line(text: str) -> str:
    """``text`` with line breaks and other control characters escaped (``\\n``, ``\\x1b``),
    so that a message or a path prints as exactly one line."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


def describe_os_error(exc: OSError) -> str:
    """``No space left on device: out.h5``: the OS's reason and the file it concerns."""
    reason = exc.strerror or str(exc)
    names = [n for n in (exc.filename, exc.filename2) if n is not None]
    if not names:
        return reason
    return f"{reason}: " + " -> ".join(_decoded(n) for n in names)


def _decoded(name) -> str:
    if isinstance(name, bytes):
        return name.decode("utf-8", "backslashreplace")
    return str(name)


def user_error(exc: BaseException) -> CommandError | None:
    """The CommandError for an exception the user caused, or None for a bug."""
    if isinstance(exc, HashkitError):
        return CommandError(str(exc))
    if isinstance(exc, OSError) and exc.errno in USER_OS_ERRORS:
        return CommandError(describe_os_error(exc))
    return None


# Commands of long bulk work (training, encoding, indexing) and the server: their OpenMP
# threads (torch's, FAISS's) sleep while they wait instead of spinning, libgomp's default.
# Spinning threads made a training epoch 4-7x slower as soon as other processes shared the
# cores (benchmarks/speed/training.md) and starved the server's event loop (docs/serve.md);
# but sleeping threads made a FAISS IVF search of 1,000 queries about 7x slower, so `search`,
# `bench` and a plain `import hashkit` keep the default. libgomp reads the variable when
# torch or FAISS first loads it, which no command has done yet when this group runs; a value
# set in the environment always wins.
SLEEPING_THREAD_COMMANDS = frozenset({"train", "encode", "build-index", "add", "serve"})


class HashkitGroup(click.Group):
    """The group: HashkitError and the OS errors of ``USER_OS_ERRORS`` become a CommandError,
    Ctrl-C becomes Interrupted; Click prints them (``show``) and exits with their code."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            raise Interrupted() from None
        except (HashkitError, OSError) as exc:
            error = user_error(exc)
            if error is None:
                raise
            raise error from exc


@click.group(
    cls=HashkitGroup, context_settings={"help_option_names": ["-h", "--help"], "show_default": True}
)
@click.version_option(__version__, prog_name="hashkit")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """hashkit: learn compact binary image codes (SDSH) and search them with FAISS.

    Errors you can fix print one line (`hashkit: error: ...`, exit 1); a bad option value is
    a usage error (exit 2). Full documentation: docs/cli.md and docs/method.md.

    \b
    Typical flow:
      hashkit train --data fashion-mnist --bits 32 --out model.pt
      hashkit build-index images/ out.faiss --model model.pt
      hashkit search out.faiss query.png -k 10
      hashkit bench --bits 32 --model model.pt --out bench/
    """
    if ctx.invoked_subcommand in SLEEPING_THREAD_COMMANDS:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _register() -> None:
    from hashkit.cli import commands

    for command in commands.COMMANDS:
        cli.add_command(command)


@functools.cache
def _registered() -> click.Group:
    _register()
    return cli


def _warning_line(message, category, filename, lineno, file=None, line=None) -> None:
    """A library's warning (PIL's decompression-bomb warning, FAISS's, torch's) as one line
    on stderr, like hashkit's own warnings, instead of Python's two (the second a line of
    the library's source)."""
    click.echo(f"hashkit: warning: {one_line(f'{category.__name__}: {message}')}", err=True)


def main() -> None:
    import warnings

    warnings.showwarning = _warning_line
    _registered()(prog_name="hashkit")


if __name__ == "__main__":
    main()
