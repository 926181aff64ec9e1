"""README's Python examples run as written: the API example on a tiny image folder instead of
Fashion-MNIST, with a training run of one epoch (the only substitutions, each checked to
apply), then the two examples that read a code store and an index, unchanged, on the index
`hashkit build-index` makes of that folder with that model."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from conftest import write_class_images

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_readme_python_examples_run(tmp_path, monkeypatch, capsys, run_cli):
    api, store, index = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    write_class_images(tmp_path / "images", classes=3, per_class=12)
    substitutions = {
        'load_dataset("fashion-mnist")': "load_dataset('images')",
        'make_split(data.labels, "reduced", seed=0)': (
            'make_split(data.labels, "reduced", seed=0, queries_per_class=2, train_per_class=6)'
        ),
        "TrainConfig(bits=32)": (
            "TrainConfig(bits=32, epochs=1, batch_size=12, per_class=4, rotation_steps=5)"
        ),
    }
    for old, new in substitutions.items():
        assert old in api, f"README's example no longer has {old!r}"
        api = api.replace(old, new)
    monkeypatch.chdir(tmp_path)
    exec(compile(api, str(README), "exec"), {})
    printed = capsys.readouterr().out.split()
    assert len(printed) >= 3 and 0.0 <= float(printed[0]) <= 1.0

    built = run_cli(
        "build-index", "images", "out.faiss", "--model", "model.pt", "--codes", "codes.h5", "-q"
    )
    assert built.exit_code == 0, built.output
    scope: dict = {}
    exec(compile(store, str(README), "exec"), scope)
    assert scope["codes"].shape == (36, 4) and scope["bits"] == 32
    assert scope["signs"].shape == (36, 32) and set(np.unique(scope["signs"])) <= {0, 1}
    scope = {}
    exec(compile(index, str(README), "exec"), scope)
    assert scope["D"].shape == (5, 10) and (scope["D"][:, 0] == 0).all()  # each finds itself
    assert set(scope["I"].ravel()) <= set(range(36))
