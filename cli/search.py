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
@click.argument(
    "index_path", metavar="[INDEX]", type=click.Path(exists=True, dir_okay=False), required=False
)
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
    index_path, queries, codes_path, k, model, nprobe, ef_search, nflip, as_json, fmt, out_path,
    milvus_uri, collection, gpu, device,
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
      hashkit search --milvus codes.db --collection images query.png   (no INDEX)
    """
    from hashkit.errors import HashkitError
    from hashkit.search import Searcher

    if milvus_uri:
        queries = (index_path,) * bool(index_path) + queries  # no INDEX: all are queries
    elif index_path is None:
        raise click.UsageError("Missing argument 'INDEX' (or --milvus URI --collection NAME).")
    if bool(queries) == bool(codes_path):
        raise HashkitError("give query images or --codes FILE (one of the two)")
    fmt = fmt or ("jsonl" if as_json else "text")
    if milvus_uri:
        searcher = _milvus_searcher(
            milvus_uri, collection, model, device, nprobe, ef_search, nflip, gpu
        )
    else:
        searcher = Searcher(index_path, model, device=device, gpu=gpu)
        if searcher.alignment.warning():
            click.echo(f"hashkit: warning: {searcher.alignment.warning()}", err=True)
        searcher.set_search_params(nprobe=nprobe, ef_search=ef_search, nflip=nflip)
        if out_path is not None:
            _refuse_overwriting_inputs(out_path, searcher, queries, codes_path, model)
    if codes_path:
        batches = searcher.search_store(codes_path, k)
    else:
        batches = [(list(range(len(queries))), list(queries), searcher.search_images(queries, k))]
    if out_path is None:
        _write(sys.stdout, batches, fmt, codes_path is not None)
        return
    from hashkit.atomic import atomic_path

    with atomic_path(out_path) as tmp, open(tmp, "w", newline="") as f:
        _write(f, batches, fmt, codes_path is not None)


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
