"""``hashkit info``."""

from __future__ import annotations

import json

import click

from hashkit.cli.main import one_line
from hashkit.cli.options import FilePath

# The training options `info` shows of a bundle (the rest is in the file, for tools).
_TRAIN_CONFIG_SHOWN = (
    "dataset",
    "protocol",
    "unseen_classes",
    "method",
    "loss",
    "rotation",
    "epochs",
)


@click.command("info")
@click.argument("path", metavar="FILE", type=FilePath(exists=True, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
def info_command(path, as_json):
    """Describe a model bundle (.pt), a code store (.h5) or an index (.faiss).

    Shows bits, count, index type and parameters, model fingerprint, file and store sizes,
    and warns when an index and its store do not line up.

    \b
    Examples:
      hashkit info model.pt
      hashkit info codes.h5
      hashkit info out.faiss --json
    """
    info = describe(path)
    if as_json:
        click.echo(json.dumps(info, default=str))
        return
    for key, value in info.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items()) or "-"
        click.echo(f"{key + ':':<20}{'-' if value is None else one_line(str(value))}")


def describe(path: str) -> dict:
    """The description of whichever artefact ``path`` is (sniffed from its first bytes)."""
    from hashkit.errors import DataError

    if path.endswith(".faiss.json"):  # a sidecar: describe its index
        from hashkit.index import describe_index

        return describe_index(path[: -len(".json")])
    with open(path, "rb") as f:
        head = f.read(8)
    if head.startswith(b"\x89HDF"):
        from hashkit.store import describe_store

        return describe_store(path)
    if head.startswith(b"PK"):
        return _describe_bundle(path)
    from hashkit.index import NotAnIndexError, describe_index

    try:
        return describe_index(path)
    except NotAnIndexError:
        raise DataError(f"{path} is not a model bundle, a code store or a FAISS index") from None


def _describe_bundle(path: str) -> dict:
    import os

    from hashkit.bundle import load_bundle

    bundle = load_bundle(path)
    return {
        "kind": "model bundle",
        "path": str(path),
        "bits": bundle.bits,
        "network": bundle.network.to_dict(),
        "classes": len(bundle.class_names),
        "model_fingerprint": bundle.fingerprint,
        "file_size": os.path.getsize(path),
        "train_config": {k: v for k, v in bundle.train_config.items() if k in _TRAIN_CONFIG_SHOWN},
        "metrics": bundle.metrics,
    }
