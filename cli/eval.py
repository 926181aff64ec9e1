"""``hashkit eval``: retrieval metrics of anyone's codes, from two labelled code stores."""

from __future__ import annotations

import json
from pathlib import Path

import click

from hashkit.atomic import atomic_path
from hashkit.cli.options import FilePath
from hashkit.errors import DataError, MismatchError
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
    "--threads",
    type=click.IntRange(min=1),
    default=None,
    help="Worker threads (default: every CPU this process may use).",
)
def eval_command(query_codes, database_codes, top_k, as_json, plot_dir, threads) -> None:
    """Score the Hamming ranking of DATABASE_CODES for each of QUERY_CODES.

    Both files are code stores with labels (HDF5: ``codes`` uint8 packed, ``labels`` int64 N
    class indices or uint8 N x C multi-hot, attribute ``bits``; see docs/formats.md), e.g.
    written by ``hashkit encode`` or by plain h5py. Relevant = same class, or at least one
    shared label; one-hot labels count as class indices. Prints mAP over the
    whole database and at each K (ties by database order; AP@k normalised by the relevant
    items within the top k), the tie-aware mAP, P@100/500/1000 and the precision within
    Hamming radius 2 (definitions: docs/method.md, section 4).

    \b
    Example:
      hashkit eval query.h5 database.h5 --top-k 1000 --top-k 5000 --plot curves/
    """
    queries = _read(query_codes, "query")
    database = _read(database_codes, "database")
    labels_q, labels_b = _check_compatible(queries, database, query_codes, database_codes)
    result = evaluate_retrieval(
        queries.codes,
        database.codes,
        labels_q,
        labels_b,
        queries.bits,
        top_k=sorted(set(top_k)),
        precision_ks=(100, 500, 1000),
        n_threads=threads,
    )
    if plot_dir is not None:
        _write_plots(result, Path(plot_dir))
    if as_json:
        click.echo(json.dumps(result))
        return
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
    if plot_dir is not None:
        click.echo(f"plots written to {plot_dir}")


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
    return normalize_label_pair(
        queries.labels,
        database.labels,
        f"the labels of {query_path}",
        f"the labels of {database_path}",
    )


def _write_plots(result: dict, folder: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    pr = result["pr_curve"]
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot(pr["recall"], pr["precision"], marker=".")
    ax.set(
        xlabel="recall",
        ylabel="precision",
        xlim=(0, 1.02),
        ylim=(0, 1.02),
        title=f"PR over Hamming radius 0..{result['bits']}",
    )
    ax.grid(alpha=0.3)
    fig.tight_layout()
    _save(fig, folder / "pr_curve.png")
    curve = result["precision_curve"]
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot(curve["k"], curve["precision"], marker=".")
    ax.set(xlabel="k (items retrieved)", ylabel="precision@k", ylim=(0, 1.02), title="Precision@k")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    _save(fig, folder / "precision_at_k.png")


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
