"""``hashkit eval``: retrieval metrics of anyone's codes, from two labelled code stores."""

from __future__ import annotations

import json
from pathlib import Path

import click

from hashkit.cli.options import FilePath
from hashkit.errors import DataError, MismatchError
from hashkit.index.compat import check_compatible
from hashkit.labels import normalize_label_pair
from hashkit.metrics import MAX_K, evaluate_retrieval
from hashkit.store import CodeStore, read_store


@click.command("eval")
@click.argument("query_codes", type=FilePath(dir_okay=False))
@click.argument("database_codes", type=FilePath(dir_okay=False))
@click.option(
    "--top-k",
    "top_k",
    type=click.IntRange(min=1, max=MAX_K),
    multiple=True,
    default=(1000,),
    help="Report mAP@K too (repeat for several K).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
@click.option(
    "--plot",
    "plot_dir",
    type=FilePath(file_okay=False),
    default=None,
    help="Write pr_curve.png and precision_at_k.png into this folder.",
)
@click.option(
    "--compare",
    nargs=3,
    multiple=True,
    metavar="NAME QUERY_CODES DATABASE_CODES",
    help="Another method's code stores: scored the same way and drawn on the same --plot "
    "figures (repeat for several methods).",
)
@click.option(
    "--name",
    default=None,
    help="Name of QUERY_CODES' method in the output and the plots' legend  [default: the "
    "query file's name]",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=None,
    help="Worker threads (default: every CPU this process may use).",
)
def eval_command(
    query_codes, database_codes, top_k, as_json, plot_dir, compare, name, threads
) -> None:
    """Score the Hamming ranking of DATABASE_CODES for each of QUERY_CODES.

    Both files are code stores with labels (HDF5: ``codes`` uint8 packed, ``labels`` int64 N
    class indices or uint8 N x C multi-hot, attribute ``bits``; see docs/formats.md), e.g.
    written by ``hashkit encode`` or by plain h5py. Relevant = same class, or at least one
    shared label; one-hot labels count as class indices. Prints mAP over the
    whole database and at each K (ties by database order; AP@k normalised by the relevant
    items within the top k), the tie-aware mAP, P@100/500/1000 and the precision within
    Hamming radius 2 (definitions: docs/method.md, section 4).

    With --compare, each other method's stores are scored too (under "compare" in --json)
    and every method is one line on the --plot figures.

    \b
    Example:
      hashkit eval query.h5 database.h5 --top-k 1000 --top-k 5000 --plot curves/
      hashkit eval sdsh_q.h5 sdsh_db.h5 --name SDSH --compare CSQ csq_q.h5 csq_db.h5 --plot cmp/
    """
    runs = [(name or Path(query_codes).stem, query_codes, database_codes), *compare]
    results = [(label, _evaluate(q, db, sorted(set(top_k)), threads)) for label, q, db in runs]
    if plot_dir is not None:
        from hashkit.plots import write_curve_plots

        write_curve_plots(results, plot_dir)
    result = results[0][1]
    if as_json:
        if compare:
            result = {**result, "compare": dict(results[1:])}
        click.echo(json.dumps(result))
        return
    for label, result in results:
        if compare:
            click.echo(f"== {label}")
        _echo_result(result)
    if plot_dir is not None:
        click.echo(f"plots written to {plot_dir}")


def _evaluate(query_codes: str, database_codes: str, top_k: list[int], threads) -> dict:
    queries = _read(query_codes, "query")
    database = _read(database_codes, "database")
    labels_q, labels_b = _check_compatible(queries, database, query_codes, database_codes)
    return evaluate_retrieval(
        queries.codes,
        database.codes,
        labels_q,
        labels_b,
        queries.bits,
        top_k=top_k,
        precision_ks=(100, 500, 1000),
        n_threads=threads,
    )


def _echo_result(result: dict) -> None:
    click.echo(
        f"queries {result['n_queries']}, database {result['n_database']}, {result['bits']} bits"
    )
    click.echo(f"mAP                 {result['map']:.4f}")
    for k, value in result["map_at"].items():
        click.echo(f"mAP@{k:<15} {value:.4f}")
    click.echo(f"tie-aware mAP       {result['tie_aware_map']:.4f}")
    for k, value in result["precision_at"].items():
        click.echo(f"P@{k:<17} {value:.4f}")
    click.echo(f"P@r<=2              {result['precision_radius2']:.4f}")


def _read(path: str, what: str) -> CodeStore:
    store = read_store(path, require_labels=True)
    if len(store) == 0:
        raise DataError(f"{what} store {path} holds no codes")
    return store


def _check_compatible(queries: CodeStore, database: CodeStore, query_path, database_path):
    """The two stores' labels brought to one kind (class indices or multi-hot), after
    checking that the stores agree on bits and on their labels."""
    if queries.bits != database.bits:
        raise MismatchError(
            f"bits disagree: {query_path} has {queries.bits}, {database_path} has {database.bits}"
        )
    check_compatible(
        bits_a=queries.bits,
        bits_b=database.bits,
        what_a=str(query_path),
        what_b=str(database_path),
        fingerprint_a=queries.fingerprint,
        fingerprint_b=database.fingerprint,
    )
    names_q, names_b = queries.class_names, database.class_names
    if names_q is not None and names_b is not None and names_q != names_b:
        raise MismatchError(
            f"class names disagree: {query_path} has {_shown(names_q)}, "
            f"{database_path} has {_shown(names_b)} (a label number must name one class in both)"
        )
    return normalize_label_pair(
        queries.labels,
        database.labels,
        f"the labels of {query_path}",
        f"the labels of {database_path}",
    )


def _shown(names: list[str], most: int = 5) -> str:
    shown = ", ".join(names[:most]) + (", ..." if len(names) > most else "")
    return f"[{shown}]"
