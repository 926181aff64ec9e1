"""``hashkit export-images``."""

from __future__ import annotations

import click

from hashkit.cli.options import FilePath, data_options, load_data, quiet_option
from hashkit.cli.progress import progress_factory


@click.command("export-images")
@data_options
@click.option(
    "--part",
    type=click.Choice(["query", "database", "train", "all"]),
    default="all",
    show_default=True,
    help="Which part of the split to write.",
)
@click.option(
    "--limit",
    type=click.IntRange(1),
    default=None,
    help="Write at most this many images of each part (the first ones).",
)
@click.option(
    "--out",
    "out_dir",
    type=FilePath(file_okay=False),
    required=True,
    help="Folder to write into: OUT/<part>/<class>/<index>.png",
)
@quiet_option
def export_images_command(
    data, root, protocol, split_file, split_seed, part, limit, out_dir, quiet
):
    """Write a dataset's split as PNG files, one sub-folder per class.

    Useful to try `hashkit build-index` and `hashkit search` on real images.

    \b
    Examples:
      hashkit export-images --data fashion-mnist --out demo/images
      hashkit export-images --data cifar10 --part query --limit 100 --out queries/
    """
    from pathlib import Path

    from hashkit.data.export import export_images

    dataset, split = load_data(data, root, protocol, split_file, split_seed)
    parts = ["query", "database", "train"] if part == "all" else [part]
    for name in parts:
        indices = getattr(split, name)[:limit]
        target = Path(out_dir) / name
        written = export_images(dataset, indices, target, progress=progress_factory(quiet))
        click.echo(
            f"{target}: {len(indices)} images ({written} written, "
            f"{len(indices) - written} already there)"
        )
