"""``hashkit add``."""

from __future__ import annotations

from pathlib import Path

import click

from hashkit.cli.index import no_wait_option, say_waiting
from hashkit.cli.options import FilePath, encoding_options
from hashkit.cli.progress import log_factory, progress_factory, warn_unlisted, warn_unreadable


@click.command("add")
@click.argument("index_path", metavar="INDEX", type=FilePath(exists=True, dir_okay=False))
@click.argument("images", metavar="IMAGES", type=FilePath(exists=True, file_okay=False))
@click.option(
    "--model",
    type=FilePath(dir_okay=False),
    default=None,
    help="Model bundle  [default: the one the index was built with]",
)
@encoding_options
@no_wait_option
@click.option(
    "--resume",
    is_flag=True,
    help="Continue an add that stopped while encoding (crash, kill, Ctrl-C): the codes saved "
    "beside the store (STORE.h5.partial/) are kept, the rest encoded.",
)
def add_command(
    index_path, images, model, batch_size, workers, strict, device, quiet, no_wait, resume
):
    """Encode the new images of a folder and append them to an index and its code store.

    Images already in the store (same path) are skipped and counted; old codes are not
    re-encoded; new ids continue after the largest id. The store, the index and its sidecar
    are replaced together when everything is written, or not at all. Two adds to one index
    run one after the other: the second waits for the first (or fails with --no-wait).
    While the new images are encoded, their codes are saved about once a minute beside the
    store; after a crash the same command with --resume continues from them.

    \b
    Examples:
      hashkit add out.faiss more_images/
      hashkit add out.faiss more_images/ --model model.pt --workers 2
      hashkit add out.faiss more_images/ --resume      # after a crash
    """
    from hashkit.bundle import load_bundle
    from hashkit.encode import find_images
    from hashkit.errors import ModelError
    from hashkit.index import add_images, index_model

    model_path = Path(model) if model else index_model(index_path)
    if model_path is None:
        raise ModelError(f"{index_path} does not name its model: pass --model")
    bundle = load_bundle(model_path)
    skipped = None if strict else []
    paths = find_images(Path(images).resolve(), skipped)
    warn_unlisted(skipped or [])
    report = add_images(
        index_path,
        paths,
        bundle,
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
    if report.recovered:
        click.echo(f"indexed {report.recovered} code(s) left by an interrupted add", err=True)
    if report.skipped_existing:
        click.echo(
            f"skipped {len(report.skipped_existing)} image(s) already in the store, "
            f"e.g. {report.skipped_existing[0]}",
            err=True,
        )
    warn_unreadable(report.skipped_unreadable)
    ids = f" (ids {report.first_id}..{report.first_id + report.added - 1})" if report.added else ""
    click.echo(f"added {report.added} image(s){ids}; {index_path} now holds {report.count}")
