"""The ``hashkit`` command group: parsing and printing only; the work is in the hashkit library."""

from __future__ import annotations

import functools
import sys

import click

from hashkit import __version__
from hashkit.errors import HashkitError


class HashkitGroup(click.Group):
    """A group whose commands turn HashkitError (and a few OS errors) into one line + exit 1."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except HashkitError as exc:
            click.echo(f"hashkit: error: {exc}", err=True)
            sys.exit(1)
        except (FileNotFoundError, PermissionError, IsADirectoryError) as exc:
            click.echo(f"hashkit: error: {exc}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("hashkit: interrupted; existing files were left as they were", err=True)
            sys.exit(130)


@click.group(
    cls=HashkitGroup, context_settings={"help_option_names": ["-h", "--help"], "show_default": True}
)
@click.version_option(__version__, prog_name="hashkit")
def cli() -> None:
    """hashkit: learn compact binary image codes (SDSH) and search them with FAISS.

    \b
    Typical flow:
      hashkit train --data fashion-mnist --bits 32 --out model.pt
      hashkit build-index images/ out.faiss --model model.pt
      hashkit search out.faiss query.png -k 10
      hashkit bench --bits 32 --model model.pt --out bench/
    """


def _register() -> None:
    from hashkit.cli import commands

    for command in commands.COMMANDS:
        cli.add_command(command)


@functools.cache
def _registered() -> click.Group:
    _register()
    return cli


def main() -> None:
    _registered()(prog_name="hashkit")


if __name__ == "__main__":
    main()
