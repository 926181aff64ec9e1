"""The retrieval curves papers show, as PNG figures with one line per method: precision vs
recall over Hamming radius 0..bits, and precision@k.

Each method is a ``(name, result)`` pair, ``result`` a dict of ``evaluate_retrieval`` (its
``pr_curve`` and ``precision_curve``). matplotlib is imported only when drawing.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from hashkit.atomic import atomic_path

Curves = Sequence[tuple[str, dict]]


def draw_pr_curves(ax, results: Curves) -> None:
    """Precision vs recall of each method on the matplotlib axes ``ax``."""
    for name, result in results:
        pr = result["pr_curve"]
        ax.plot(pr["recall"], pr["precision"], marker=".", label=name)
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1.02), ylim=(0, 1.02))
    ax.set_title("Precision-recall over Hamming radius")
    _finish(ax, results)


def draw_precision_curves(ax, results: Curves) -> None:
    """Precision@k of each method on the matplotlib axes ``ax``."""
    for name, result in results:
        curve = result["precision_curve"]
        ax.plot(curve["k"], curve["precision"], marker=".", label=name)
    ax.set(xlabel="k (items retrieved)", ylabel="precision@k", ylim=(0, 1.02))
    ax.set_title("Precision@k")
    _finish(ax, results)


def write_curve_plots(results: Curves, folder: str | os.PathLike) -> list[Path]:
    """``pr_curve.png`` and ``precision_at_k.png`` in ``folder`` (created), each written
    atomically; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, draw in (
        ("pr_curve.png", draw_pr_curves),
        ("precision_at_k.png", draw_precision_curves),
    ):
        fig, ax = plt.subplots(figsize=(5, 4))
        draw(ax, results)
        fig.tight_layout()
        written.append(save_figure(fig, folder / name))
    return written


def save_figure(fig, path: str | os.PathLike) -> Path:
    """Write the matplotlib figure ``fig`` as a PNG at ``path`` atomically, and close it."""
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    return Path(path)


def _finish(ax, results: Curves) -> None:
    ax.grid(alpha=0.3)
    if len(results) > 1:
        ax.legend(fontsize=8)
