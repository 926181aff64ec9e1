"""``hashkit search``."""

from __future__ import annotations

import contextlib
import csv
import io
import itertools
import json
import sys

import click

from hashkit.cli.main import one_line
from hashkit.cli.options import MAX_INT, MAX_K, FilePath, device_option

FORMATS = ("text", "json", "jsonl", "csv")


def gpu_option(func):
    return click.option(
        "--gpu/--no-gpu",
        default=None,
        help="Search a flat index with GpuIndexBinaryFlat  [default: when faiss sees a GPU]",
    )(func)


@click.command("search")
@click.argument(
    "index_path", metavar="[INDEX]", type=FilePath(exists=True, dir_okay=False), required=False
)
@click.argument(
    "queries",
    metavar="[QUERY_IMAGE...]",
    nargs=-1,
    type=FilePath(exists=True, dir_okay=False),
)
@click.option(
    "--codes",
    "codes_path",
    type=FilePath(exists=True, dir_okay=False),
    default=None,
    help="Batch search: queries are the codes of a code store (.h5) or a .npy uint8 array.",
)
@click.option(
    "-k",
    "k",
    type=click.IntRange(1, MAX_K),
    default=10,
    show_default=True,
    help="Results per query.",
)
@click.option(
    "--model",
    type=FilePath(dir_okay=False),
    default=None,
    help="Model bundle  [default: the one the index was built with]",
)
@click.option(
    "--radius",
    type=click.IntRange(0, MAX_INT),
    default=None,
    help="Every hit within this Hamming distance instead of the k nearest (flat, ivf and "
    "multihash indexes).",
)
@click.option("--nprobe", type=click.IntRange(1, MAX_INT), default=None, help="IVF lists to visit.")
@click.option("--ef-search", type=click.IntRange(1, MAX_INT), default=None, help="HNSW candidates.")
@click.option(
    "--nflip", type=click.IntRange(0, MAX_INT), default=None, help="Multi-hash bit flips."
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON array of per-query objects.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default=None,
    help="text (for people), json (one array), jsonl (one object per line) or csv  "
    "[default: text; json with --json]",
)
@click.option(
    "--out",
    "out_path",
    type=FilePath(dir_okay=False, writable=True, output=True),
    default=None,
    help="Write results to this file (atomically) instead of stdout.",
)
@click.option(
    "--milvus",
    "milvus_uri",
    metavar="URI",
    default=None,
    help="Search this Milvus (a Lite .db file or a server URI) instead of a FAISS INDEX.",
)
@click.option("--collection", default=None, help="Milvus collection (with --milvus).")
@gpu_option
@device_option
def search_command(
    index_path, queries, codes_path, k, model, radius, nprobe, ef_search, nflip, as_json, fmt,
    out_path, milvus_uri, collection, gpu, device,
):  # fmt: skip
    """Find the stored images nearest (in Hamming distance) to each query.

    Queries are image files (encoded with the index's model) or, with --codes, the codes of a
    code store (.h5) or a .npy uint8 array: a batch search. Every format has the same fields
    for both kinds of query: query_id (position of the query), query_path (the image, or the
    store's path; empty for .npy), and per hit rank, id, distance and path. --json prints
    one JSON array of {"query_id", "query_path", "results": [{"rank", "id", "distance",
    "path"}, ...]}; --format jsonl prints the same objects one per line; csv one row per hit.
    Text output escapes control characters in paths (a newline prints as \\n).

    \b
    Examples:
      hashkit search out.faiss query.png
      hashkit search out.faiss a.jpg b.jpg -k 5 --json
      hashkit search out.faiss --codes queries.h5 -k 100 --format csv --out results.csv
      hashkit search --milvus codes.db --collection images query.png   (no INDEX)
      hashkit search out.faiss query.png --radius 2
    """
    from hashkit.search import Searcher

    if milvus_uri:
        queries = (index_path,) * bool(index_path) + queries  # no INDEX: all are queries
    elif index_path is None:
        raise click.UsageError("Missing argument 'INDEX' (or --milvus URI --collection NAME).")
    if bool(queries) == bool(codes_path):
        raise click.UsageError("give query images or --codes FILE (one of the two)")
    if as_json and fmt not in (None, "json"):
        raise click.UsageError(f"--json and --format {fmt} disagree: give one of them")
    fmt = fmt or ("json" if as_json else "text")
    if milvus_uri:
        searcher = _milvus_searcher(
            milvus_uri, collection, model, device, nprobe, ef_search, nflip, gpu
        )
    else:
        searcher = Searcher(index_path, model, device=device, gpu=gpu)
        if searcher.alignment.warning():
            click.echo(f"hashkit: warning: {one_line(searcher.alignment.warning())}", err=True)
        searcher.set_search_params(nprobe=nprobe, ef_search=ef_search, nflip=nflip)
        if out_path is not None:
            _refuse_overwriting_inputs(out_path, searcher, queries, codes_path, model)
    if codes_path:
        batches = _started(searcher.search_store(codes_path, k, radius=radius))
    else:
        hits = searcher.search_images(queries, k, radius)
        batches = [(range(len(queries)), list(queries), hits)]
    if out_path is None:
        with _stdout() as f:
            write_results(f, batches, fmt)
        return
    from hashkit.atomic import atomic_path

    with (
        atomic_path(out_path) as tmp,
        open(tmp, "w", newline="", encoding="utf-8", errors="surrogateescape") as f,
    ):
        write_results(f, batches, fmt)


def _milvus_searcher(uri, collection, model, device, nprobe, ef_search, nflip, gpu):
    """A MilvusSearcher closed when the command ends; FAISS-only options are refused."""
    import os

    from hashkit.milvus_search import MilvusSearcher

    if collection is None:
        raise click.UsageError("--milvus needs --collection NAME")
    if ef_search is not None or nflip is not None or gpu:
        raise click.UsageError("--ef-search, --nflip and --gpu are FAISS options, not --milvus's")
    searcher = MilvusSearcher(
        uri,
        collection,
        model,
        device=device,
        nprobe=nprobe,
        token=os.environ.get("MILVUS_TOKEN", ""),
    )
    click.get_current_context().call_on_close(searcher.close)
    return searcher


def _refuse_overwriting_inputs(out_path, searcher, queries, codes_path, model) -> None:
    from hashkit.atomic import check_outputs
    from hashkit.index import journal_path, sidecar_path

    index = searcher.index_path
    inputs = {
        "the index": index,
        "its sidecar": sidecar_path(index),
        "its journal": journal_path(index),
        "its code store": searcher.info.store,
        "the model": model or searcher.info.model,
        "the query store (--codes)": codes_path,
    }
    inputs.update({f"query image {q}": q for q in queries})
    check_outputs({"the --out file": out_path}, inputs)


def _started(batches):
    """``batches`` with the first one already made: the query store is checked whole before
    it (iter_query_codes), so a bad one fails before any output, not after a '[' or a CSV
    header on stdout."""
    batches = iter(batches)
    first = next(batches, None)
    return batches if first is None else itertools.chain([first], batches)


def write_results(f, batches, fmt: str) -> None:
    """Write search results to the text stream ``f`` in ``fmt`` (one of FORMATS).

    ``batches`` yields ``(query ids, query paths, hits per query)`` as Searcher.search_store
    does; every format carries the same fields, whether the queries were images or codes.
    """
    queries = (
        (int(qid), query, hits)
        for query_ids, query_paths, results in batches
        for qid, query, hits in zip(query_ids, query_paths, results)
    )
    if fmt == "csv":
        writer = csv.writer(f)
        writer.writerow(["query_id", "query_path", "rank", "id", "distance", "path"])
        for qid, query, hits in queries:
            writer.writerows([qid, query, h.rank, h.id, h.distance, h.path] for h in hits)
    elif fmt == "jsonl":
        for qid, query, hits in queries:
            f.write(json.dumps(_record(qid, query, hits)) + "\n")
    elif fmt == "json":
        f.write("[")
        for n, (qid, query, hits) in enumerate(queries):
            f.write(("," if n else "") + "\n" + json.dumps(_record(qid, query, hits)))
        f.write("\n]\n")
    else:
        for qid, query, hits in queries:
            f.write(f"# {one_line(query) if query else qid}\n")
            for h in hits:
                f.write(f"{h.rank:4d}  {h.distance:3d}  {one_line(h.path) if h.path else h.id}\n")


@contextlib.contextmanager
def _stdout():
    """stdout as UTF-8 text that writes a non-UTF-8 file name back as its own bytes
    (surrogateescape), as the ``--out`` file does, instead of failing to encode it."""
    stream = io.TextIOWrapper(
        sys.stdout.buffer, encoding="utf-8", errors="surrogateescape", newline=""
    )
    try:
        yield stream
    finally:
        stream.flush()
        stream.detach()


def _record(qid: int, query: str, hits) -> dict:
    return {
        "query_id": qid,
        "query_path": query,
        "results": [
            {"rank": h.rank, "id": h.id, "distance": h.distance, "path": h.path} for h in hits
        ],
    }
