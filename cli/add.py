"""``hashkit add``."""

from __future__ import annotations

from pathlib import Path

import click

from hashkit.cli.options import FilePath, encoding_options
from hashkit.cli.progress import progress_factory, warn_unreadable


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
def add_command(index_path, images, model, batch_size, workers, strict, device, quiet):
    """Encode the new images of a folder and append them to an index and its code store.

    Images already in the store (same path) are skipped and counted; old codes are not
    re-encoded; new ids continue after the largest id. The store, the index and its sidecar
    are replaced only when everything is written; if a run dies between those renames, the
    next `hashkit add` indexes what the store holds beyond the index.

    \b
    Examples:
      hashkit add out.faiss more_images/
      hashkit add out.faiss more_images/ --model model.pt --workers 2
    """
    from hashkit.bundle import load_bundle
    from hashkit.encode import find_images
    from hashkit.errors import ModelError
    from hashkit.index import add_images, read_index

    _, info = read_index(index_path)
    model_path = Path(model) if model else info.model
    if model_path is None:
        raise ModelError(f"{index_path} does not name its model: pass --model")
    bundle = load_bundle(model_path)
    report = add_images(
        index_path,
        find_images(Path(images).resolve()),
        bundle,
        batch_size=batch_size,
        num_workers=workers,
        device=device,
        strict=strict,
        progress=progress_factory(quiet),
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
