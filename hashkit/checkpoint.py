"""Training checkpoints: everything a run killed between two epochs needs to go on as if it
had never stopped.

A checkpoint is written atomically after every epoch (a PyTorch file read back with
``weights_only=True``): the network, the loss's own weights and state, the optimiser, the
learning-rate schedule, the sampler's next epoch, the random streams of every rank (torch's
global generator, the augmentation's, CUDA's), the losses and the per-epoch log so far, and
what it belongs to (the recipe, the training items, the number of processes), so that a
resume with anything else is refused instead of silently training something different.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from hashkit.errors import HashkitError

FORMAT = "hashkit-train-checkpoint"
VERSION = 1
# settings that may change between a run and its resume: where it runs, not what it trains
RUNTIME_SETTINGS = ("device", "num_workers")


def checkpoint_path_for(bundle: str | os.PathLike) -> Path:
    """The default checkpoint beside a bundle: ``model.pt`` -> ``model.ckpt``."""
    return Path(bundle).with_suffix(".ckpt")


def training_identity(config: dict, dataset_name: str, indices: np.ndarray, world: int) -> dict:
    """What a checkpoint must match to be resumed: the recipe (but where it runs), the
    dataset and its training items, and the number of processes."""
    digest = hashlib.sha256(np.ascontiguousarray(indices, dtype=np.int64).tobytes()).hexdigest()
    recipe = {k: v for k, v in config.items() if k not in RUNTIME_SETTINGS}
    return {"recipe": recipe, "dataset": dataset_name, "items": digest, "processes": world}


def save_checkpoint(path: str | os.PathLike, state: dict) -> None:
    """Write ``state`` (tensors, numbers, strings, lists and dicts) to ``path`` atomically."""
    import torch

    from hashkit.atomic import atomic_path

    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, "version": VERSION, **state}, tmp)


def load_checkpoint(path: str | os.PathLike, identity: dict) -> dict:
    """The checkpoint at ``path``, checked against ``identity`` (``training_identity``);
    HashkitError naming the first difference."""
    from hashkit.torch_load import load_weights_only

    path = Path(path)
    if not path.exists():
        raise HashkitError(
            f"cannot resume: no checkpoint {path} (a run writes it after each epoch)"
        )
    state = load_weights_only(path, "training checkpoint")
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise HashkitError(f"{path} is not a hashkit training checkpoint")
    if state.get("version") != VERSION:
        raise HashkitError(
            f"{path} is a version {state.get('version')} checkpoint; this hashkit reads version "
            f"{VERSION}"
        )
    saved = state["identity"]
    if saved["processes"] != identity["processes"]:
        raise HashkitError(
            f"cannot resume {path}: it was written by {saved['processes']} process(es), this run "
            f"has {identity['processes']} (each process has its own random stream)"
        )
    if saved["dataset"] != identity["dataset"] or saved["items"] != identity["items"]:
        raise HashkitError(f"cannot resume {path}: it was trained on other data or another split")
    changed = sorted(
        k
        for k in set(saved["recipe"]) | set(identity["recipe"])
        if saved["recipe"].get(k) != identity["recipe"].get(k)
    )
    if changed:
        k = changed[0]
        raise HashkitError(
            f"cannot resume {path}: its {k} is {saved['recipe'].get(k)!r}, this run's is "
            f"{identity['recipe'].get(k)!r}"
        )
    return state
