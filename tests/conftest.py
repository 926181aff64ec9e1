"""Shared fixtures: tiny labelled image folders and a command-line runner."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from hashkit.cli.main import _registered


def write_class_images(root, classes=3, per_class=12, size=16, seed=0):
    """``root/<class>/<i>.png``: each class a colour with its own stripe pattern, plus noise."""
    rng = np.random.default_rng(seed)
    paths = []
    for c in range(classes):
        folder = root / f"class{c}"
        folder.mkdir(parents=True, exist_ok=True)
        base = np.zeros((size, size, 3))
        base[..., c % 3] = 200
        base[:, c::classes, :] += 50
        for i in range(per_class):
            image = np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)
            path = folder / f"{i:03d}.png"
            Image.fromarray(image).save(path)
            paths.append(path)
    return paths


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` need a CUDA GPU. Where torch sees none, this one condition skips
    them, so they show as skipped, never as passed (benchmarks/gpu/run.sh runs them on a GPU)."""
    gpu_tests = [item for item in items if item.get_closest_marker("gpu") is not None]
    if not gpu_tests:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU: torch.cuda.is_available() is False")
    for item in gpu_tests:
        item.add_marker(skip)


@pytest.fixture
def image_folder(tmp_path):
    """A labelled folder of 3 classes x 12 PNG images and a split file over it."""
    root = tmp_path / "images"
    paths = write_class_images(root)
    n = len(paths)
    query = [0, 12, 24]
    database = [i for i in range(n) if i not in query]
    split = {"train": database, "query": query, "database": database}
    split_path = tmp_path / "split.json"
    split_path.write_text(json.dumps(split))
    return root, split_path


@pytest.fixture
def run_cli():
    """Run ``hashkit ARGS...`` in-process; returns the click Result (exit_code, stdout, stderr)."""
    cli = _registered()
    runner = CliRunner()

    def run(*args):
        return runner.invoke(cli, [str(a) for a in args], catch_exceptions=False)

    return run
