"""The code before and after, side by side: the ``hashkit`` package as of a commit, unpacked
into a folder that goes first on a child process's PYTHONPATH, so that one benchmark run times
the same work with both versions on the same machine at the same time (this machine is shared
and noisy: only ratios measured that way mean much)."""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# main before the training and encoding work of issue 10 (targets 3 and 4)
BEFORE = "b6b4ad6"


def package_at(commit: str, folder: Path) -> Path:
    """``folder/<commit>`` holding ``hashkit/`` as of ``commit`` (unpacked once); put it on
    PYTHONPATH to import that version."""
    tree = folder / commit
    if not (tree / "hashkit" / "__init__.py").exists():
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", "--format=tar", commit, "hashkit"],
            check=True,
            capture_output=True,
        ).stdout
        tree.mkdir(parents=True, exist_ok=True)
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(tree, filter="data")
    return tree


def child_env(pythonpath: Path, **settings: str) -> dict[str, str]:
    """This process's environment without the thread settings a benchmark varies, with
    ``pythonpath`` first on PYTHONPATH and ``settings`` added."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "GOMP_SPINCOUNT", "PYTHONPATH")
    }
    env["PYTHONPATH"] = str(pythonpath)
    env.update(settings)
    return env
