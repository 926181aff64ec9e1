"""``hashkit search``."""

from __future__ import annotations

import csv
import json
import sys

import click

from hashkit.cli.options import device_option


def gpu_option(func):
    return click.option(
        "--gpu/--no-gpu",
        default=None,
        help="Search a flat index with GpuIndexBinaryFlat  [default: when faiss sees a GPU]",
    )(func)


@click.command("search")
@click.argument("index_path", metavar="INDEX", type=click.Path(exists=True, dir_okay=False))
@click.argument(
    "queries",
    metavar="[QUERY_IMAGE...]",
    nargs=-1,
    type=click.Path(exists=True, dir_okay=False),
)
@click.option(
    "--codes",
    "codes_path",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Batch search: queries are the codes of a code store (.h5) or a .npy uint8 array.",
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
@click.option(
    "--radius",
    type=click.IntRange(0),
    default=None,
    help="Every hit within this Hamming distance instead of the k nearest (flat, ivf and "
    "multihash indexes).",
)
@click.option("--nprobe", type=click.IntRange(1), default=None, help="IVF lists to visit.")
@click.option("--ef-search", type=click.IntRange(1), default=None, help="HNSW candidates.")
@click.option("--nflip", type=click.IntRange(0), default=None, help="Multi-hash bit flips.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per query (JSON lines).")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "jsonl", "csv"]),
    default=None,
    help="Output format  [default: text; jsonl with --json]",
)
@click.option(
    "--out",
    "out_path",
    type=click.Path(dir_okay=False, writable=True),
    default=None,
    help="Write results to this file (atomically) instead of stdout.",
)
@gpu_option
@device_option
def search_command(
    index_path, queries, codes_path, k, model, radius, nprobe, ef_search, nflip, as_json, fmt,
    out_path, gpu, device,
):  # fmt: skip
    """Find the stored images nearest (in Hamming distance) to each query.

    Queries are image files (encoded with the index's model) or, with --codes, the codes of a
    code store: a batch search whose results go out as JSON lines or CSV
    (query_id, query_path, rank, id, distance, path).

    \b
    Examples:
      hashkit search out.faiss query.png
      hashkit search out.faiss a.jpg b.jpg -k 5 --json
      hashkit search out.faiss --codes queries.h5 -k 100 --format csv --out results.csv
      hashkit search out.faiss query.png --radius 2
    """
    from hashkit.errors import HashkitError
    from hashkit.index import set_search_params
    from hashkit.search import Searcher

    if bool(queries) == bool(codes_path):
        raise HashkitError("give query images or --codes FILE (one of the two)")
    fmt = fmt or ("jsonl" if as_json else "text")
    searcher = Searcher(index_path, model, device=device, gpu=gpu)
    if searcher.alignment.warning():
        click.echo(f"hashkit: warning: {searcher.alignment.warning()}", err=True)
    set_search_params(searcher.search_index, nprobe=nprobe, ef_search=ef_search, nflip=nflip)
    if radius is not None:
        set_search_params(searcher.index, nprobe=nprobe, ef_search=ef_search, nflip=nflip)
    if codes_path:
        batches = searcher.search_store(codes_path, k, radius=radius)
    else:
        hits = searcher.search_images(queries, k, radius)
        batches = [(list(range(len(queries))), list(queries), hits)]
    if out_path is None:
        _write(sys.stdout, batches, fmt, codes_path is not None)
        return
    from hashkit.atomic import atomic_path

    with atomic_path(out_path) as tmp, open(tmp, "w", newline="") as f:
        _write(f, batches, fmt, codes_path is not None)


def _write(f, batches, fmt: str, with_ids: bool) -> None:
    writer = None
    if fmt == "csv":
        writer = csv.writer(f)
        writer.writerow(["query_id", "query_path", "rank", "id", "distance", "path"])
    for query_ids, query_paths, results in batches:
        for qid, query, hits in zip(query_ids, query_paths, results):
            if writer is not None:
                for h in hits:
                    writer.writerow([int(qid), query, h.rank, h.id, h.distance, h.path])
            elif fmt == "jsonl":
                record = {"query": query} if not with_ids else {"query_id": int(qid)}
                if with_ids:
                    record["query_path"] = query
                record["results"] = [
                    {"rank": h.rank, "id": h.id, "distance": h.distance, "path": h.path}
                    for h in hits
                ]
                f.write(json.dumps(record) + "\n")
            else:
                f.write(f"# {query or qid}\n")
                for h in hits:
                    f.write(f"{h.rank:4d}  {h.distance:3d}  {h.path or h.id}\n")
