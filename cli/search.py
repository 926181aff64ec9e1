"""``hashkit search``."""

from __future__ import annotations

import json

import click

from hashkit.cli.options import device_option


@click.command("search")
@click.argument("index_path", metavar="INDEX", type=click.Path(exists=True, dir_okay=False))
@click.argument(
    "queries",
    metavar="QUERY_IMAGE...",
    nargs=-1,
    required=True,
    type=click.Path(exists=True, dir_okay=False),
)
@click.option(
    "-k", "k", type=click.IntRange(1), default=10, show_default=True, help="Results per query."
)
@click.option(
    "--model",
    type=click.Path(dir_okay=False),
    default=None,
    help="Model bundle  [default: the one the index was built with]",
)
@click.option("--nprobe", type=click.IntRange(1), default=None, help="IVF lists to visit.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per query.")
@device_option
def search_command(index_path, queries, k, model, nprobe, as_json, device):
    """Find the images nearest (in Hamming distance) to each query image.

    \b
    Examples:
      hashkit search out.faiss query.png
      hashkit search out.faiss a.jpg b.jpg -k 5 --json
    """
    from hashkit.search import Searcher

    searcher = Searcher(index_path, model, device=device)
    if nprobe is not None and hasattr(searcher.index, "nprobe"):
        searcher.index.nprobe = nprobe
    results = searcher.search_images(list(queries), k)
    for query, hits in zip(queries, results):
        if as_json:
            click.echo(
                json.dumps(
                    {
                        "query": query,
                        "results": [
                            {"rank": h.rank, "id": h.id, "distance": h.distance, "path": h.path}
                            for h in hits
                        ],
                    }
                )
            )
            continue
        click.echo(f"# {query}")
        for h in hits:
            click.echo(f"{h.rank:4d}  {h.distance:3d}  {h.path or h.id}")
