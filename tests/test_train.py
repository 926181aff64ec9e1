"""Training: the network, the rotation stage and the metrics `hashkit train` reports, on a
few dozen generated images (seconds on a CPU)."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest

from hashkit.config import TrainConfig
from hashkit.data.base import Dataset
from hashkit.data.protocol import Split
from hashkit.errors import DataError, HashkitError
from hashkit.train import learn_rotation, train, train_network

TINY = dict(bits=8, epochs=3, batch_size=16, per_class=4, rotation_steps=20, device="cpu")


def toy_dataset(classes=4, per_class=12, size=16, seed=0) -> Dataset:
    """Grey images: each class a bright square at its own place, plus noise."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for c in range(classes):
        for _ in range(per_class):
            image = rng.normal(40, 15, (size, size))
            r, col = divmod(c, 2)
            image[r * 8 : r * 8 + 8, col * 8 : col * 8 + 8] += 150
            images.append(np.clip(image, 0, 255).astype(np.uint8))
            labels.append(c)
    return Dataset(np.stack(images), labels=np.array(labels, dtype=np.int64), name="toy")


def toy_split(ds: Dataset) -> Split:
    query = np.arange(0, len(ds), 6)
    rest = np.setdiff1d(np.arange(len(ds)), query)
    return Split(train=rest, query=query, database=rest)


def test_train_reports_training_and_query_map_for_sign_and_rotation():
    ds = toy_dataset()
    result = train(ds, toy_split(ds), TrainConfig(**TINY))
    m = result.metrics
    for key in ("train_map_sign", "train_map_rotated", "map_sign", "map_rotated"):
        assert 0.0 < m[key] <= 1.0
    # The search keeps a candidate only when the training mAP rises, so it cannot fall.
    assert m["search_map_end"] >= m["search_map_start"]
    assert m["train_map_rotated"] == pytest.approx(m["search_map_end"])
    r = result.bundle.rotation
    assert r.shape == (8, 8)
    np.testing.assert_allclose(r @ r.T, np.eye(8), atol=1e-5)
    assert result.bundle.train_config["loss"] == TrainConfig().loss
    assert len(result.epoch_losses) == 3


@pytest.mark.parametrize("multi_label,k", [(False, 1000), (True, 5000)])
def test_train_reports_the_protocols_map_at_k(multi_label, k):
    ds = toy_dataset()
    if multi_label:  # multi-hot: each image has its class, and class 0 images also class 3
        hot = np.eye(4, dtype=np.uint8)[ds.labels]
        hot[ds.labels == 0, 3] = 1
        ds = Dataset(ds.images, labels=hot, name="toy-multi")
    m = train(ds, toy_split(ds), TrainConfig(**TINY)).metrics
    assert m["top_k"] == k
    for name in ("sign", "rotated"):
        # the database has fewer than k items, so mAP@k is the whole-database mAP
        assert m[f"map_at_k_{name}"] == pytest.approx(m[f"map_{name}"])
        assert 0.0 < m[f"map_{name}"] <= 1.0


@pytest.mark.parametrize("loss,alpha", [("spring", None), ("margin", 2.0), ("likelihood", 0.5)])
def test_training_lowers_every_loss_on_separable_images(loss, alpha):
    ds = toy_dataset()
    config = TrainConfig(**{**TINY, "epochs": 6, "lr": 3e-3}, loss=loss, alpha=alpha)
    _, losses = train_network(ds, np.arange(len(ds)), config)
    assert losses[-1] < losses[0]


def test_training_with_augmentation_runs_and_is_seeded():
    ds = toy_dataset()
    config = TrainConfig(**{**TINY, "epochs": 2}, augment="crop")
    _, first = train_network(ds, np.arange(len(ds)), config)
    _, again = train_network(ds, np.arange(len(ds)), config)
    assert first == pytest.approx(again)


def test_training_without_labels_is_a_data_error():
    ds = toy_dataset()
    unlabelled = Dataset(ds.images, name="toy")
    with pytest.raises(DataError, match="no labels"):
        train_network(unlabelled, np.arange(len(ds)), TrainConfig(**TINY))


def clustered(n=300, bits=12, classes=5, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    centres = rng.standard_normal((classes, bits))
    h = centres[labels] + 0.7 * rng.standard_normal((n, bits))
    h /= np.linalg.norm(h, axis=1, keepdims=True)
    return h.astype(np.float32), labels


def test_learn_rotation_none_is_the_identity_and_itq_is_orthogonal():
    h, labels = clustered()
    config = TrainConfig(bits=12)
    r, info = learn_rotation(h, labels, dataclasses.replace(config, rotation="none"))
    np.testing.assert_array_equal(r, np.eye(12))
    assert info == {}
    r, _ = learn_rotation(h, labels, dataclasses.replace(config, rotation="itq"))
    np.testing.assert_allclose(r @ r.T, np.eye(12), atol=1e-5)


def test_random_search_from_itq_starts_at_the_itq_rotation_score():
    from hashkit.codes import sign_codes
    from hashkit.metrics import mean_average_precision
    from hashkit.train import _rotation_subsets

    h, labels = clustered()
    config = TrainConfig(bits=12, rotation_steps=30, rotation_queries=100)
    itq, _ = learn_rotation(h, labels, dataclasses.replace(config, rotation="itq"))
    _, info = learn_rotation(h, labels, dataclasses.replace(config, rotation_init="itq"))
    q, db = _rotation_subsets(len(h), config)
    assert info["search_queries"] == 100 and info["search_database"] == 200
    expected = mean_average_precision(
        sign_codes(h[q], itq), sign_codes(h[db], itq), labels[q], labels[db], 12
    )
    assert info["search_map_start"] == pytest.approx(expected)
    assert info["search_map_end"] >= info["search_map_start"]


def test_rotation_seed_changes_the_search_and_defaults_to_the_training_seed():
    h, labels = clustered()
    config = TrainConfig(bits=12, rotation_steps=30, seed=3)
    r_default, _ = learn_rotation(h, labels, config)
    r_same, _ = learn_rotation(h, labels, dataclasses.replace(config, rotation_seed=3))
    r_other, _ = learn_rotation(h, labels, dataclasses.replace(config, rotation_seed=4))
    np.testing.assert_array_equal(r_default, r_same)
    assert not np.allclose(r_default, r_other)


def test_unknown_rotation_is_refused():
    h, labels = clustered()
    with pytest.raises(HashkitError, match="unknown rotation"):
        learn_rotation(h, labels, TrainConfig(bits=12, rotation="pca"))


def test_train_command_defaults_are_the_train_config_defaults(run_cli):
    default = TrainConfig()
    text = re.sub(r"\s+", " ", run_cli("train", "--help").stdout)
    assert "--loss [spring|margin|likelihood] Triplet loss" in text
    assert re.search(rf"--loss .*?\[default: {default.loss}\]", text)
    assert re.search(rf"--epochs INTEGER RANGE \[default: {default.epochs};", text)
    assert re.search(rf"--augment .*?\[default: {default.augment}\]", text)
    assert re.search(
        rf"--rotation-steps INTEGER RANGE .*?\[default: {default.rotation_steps};", text
    )


def test_train_command_prints_training_and_query_map_for_sign_and_rotation(
    tmp_path, image_folder, run_cli
):
    root, split = image_folder
    args = ["--bits", "8", "--epochs", "2", "--batch-size", "12", "--per-class", "4"]
    args += ["--rotation", "random-search", "--init", "itq", "--rotation-steps", "10"]
    result = run_cli(
        "train", "--data", root, "--split", split, *args, "--out", tmp_path / "m.pt", "-q"
    )
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    training = [line for line in lines if line.startswith("training mAP")]
    query = [line for line in lines if line.startswith("query vs database mAP")]
    assert len(training) == 1 and len(query) == 2
    assert "random search from itq" in training[0]
    assert "whole database" in query[0] and query[1].startswith("query vs database mAP@1000:")
    assert len(re.findall(r"\d\.\d{4}", training[0] + query[0] + query[1])) == 6


class RecordingBar:
    """A tqdm stand-in: records its total, the steps iterated and every postfix."""

    made: list[RecordingBar] = []

    def __init__(self, iterable, total=None, desc=None, unit=None):
        self.iterable, self.total, self.desc = iterable, total, desc
        self.steps, self.postfixes = 0, []
        RecordingBar.made.append(self)

    def __iter__(self):
        for item in self.iterable:
            self.steps += 1
            yield item

    def set_postfix(self, refresh=True, **values):
        self.postfixes.append(values)


def test_training_shows_one_bar_over_every_step_with_the_epoch_loss():
    RecordingBar.made = []
    ds = toy_dataset()
    lines = []
    config = TrainConfig(**TINY)
    _, losses = train_network(
        ds, np.arange(len(ds)), config, progress=RecordingBar, log=lines.append
    )
    (bar,) = RecordingBar.made
    assert bar.desc == "training"
    # 12 images of each of 4 classes: 3 chunks of 4 each; batches of 4 classes x 4: 3 an epoch
    assert bar.total == bar.steps == 3 * 3
    assert [p["epoch"] for p in bar.postfixes] == ["1/3", "2/3", "3/3"]
    assert [float(p["loss"]) for p in bar.postfixes] == pytest.approx(losses, abs=1e-4)
    assert [line.split()[:2] for line in lines] == [
        ["epoch", "1/3"],
        ["epoch", "2/3"],
        ["epoch", "3/3"],
    ]


def test_the_rotation_search_shows_a_bar_over_its_steps_with_the_current_map():
    RecordingBar.made = []
    h, labels = clustered()
    _, info = learn_rotation(
        h, labels, TrainConfig(bits=12, rotation_steps=40), progress=RecordingBar
    )
    (bar,) = RecordingBar.made
    assert bar.desc == "rotation search" and bar.total == bar.steps == 40
    shown = [float(p["mAP"]) for p in bar.postfixes]
    assert shown[0] == pytest.approx(info["search_map_start"], abs=1e-4)
    assert shown[-1] == pytest.approx(info["search_map_end"], abs=1e-4)
    assert shown == sorted(shown) and len(shown) == info["search_accepted"] + 1


BAD_RECIPES = [
    ({"lr": float("nan")}, "lr must be a finite number > 0"),
    ({"lr": float("inf")}, "lr must be a finite number > 0"),
    ({"lr": 0.0}, "lr must be a finite number > 0"),
    ({"lr": -1e-3}, "lr must be a finite number > 0"),
    ({"weight_decay": float("nan")}, "weight_decay"),
    ({"alpha": float("nan")}, "alpha"),
    ({"bits": 1}, "bits must be an integer >= 2"),
    ({"epochs": 0}, "epochs must be an integer >= 1"),
    ({"per_class": 1}, "a positive pair"),
    ({"batch_size": 18, "per_class": 4}, "must be a multiple of the images per class"),
    ({"batch_size": 4, "per_class": 4}, "at least two classes"),
    ({"seed": -1}, "seed must be an integer >= 0"),
    ({"rotation_init": "pca"}, "unknown rotation_init"),
    ({"loss": "hinge"}, "unknown loss"),
]


@pytest.mark.parametrize("overrides,message", BAD_RECIPES)
def test_a_recipe_that_cannot_train_is_refused_before_training(overrides, message):
    ds = toy_dataset()
    lines = []
    with pytest.raises(HashkitError, match=message):
        train(ds, toy_split(ds), TrainConfig(**{**TINY, **overrides}), log=lines.append)
    assert lines == []  # not one epoch ran


def test_fewer_classes_than_a_batch_needs_is_refused_before_training():
    ds = toy_dataset(classes=4)
    lines = []
    config = TrainConfig(**{**TINY, "batch_size": 20, "per_class": 4})  # 5 classes a batch
    with pytest.raises(DataError, match="needs 5 classes .* has 4"):
        train_network(ds, np.arange(len(ds)), config, log=lines.append)
    assert lines == []


def test_a_diverging_run_stops_with_an_error_instead_of_nan_codes():
    ds = toy_dataset()
    config = TrainConfig(**{**TINY, "lr": 1e30})
    with pytest.raises(HashkitError, match="diverged in epoch 1"):
        train_network(ds, np.arange(len(ds)), config)


@pytest.mark.parametrize(
    "args,option",
    [
        (["--lr", "nan"], "--lr"),
        (["--lr", "inf"], "--lr"),
        (["--lr", "0"], "--lr"),
        (["--weight-decay", "-1"], "--weight-decay"),
        (["--alpha", "nan"], "--alpha"),
        (["--bits", "1"], "--bits"),
        (["--seed", "-3"], "--seed"),
        (["--per-class", "1"], "--per-class"),
    ],
)
def test_train_command_refuses_bad_option_values_as_usage_errors(
    tmp_path, image_folder, run_cli, args, option
):
    root, split = image_folder
    result = run_cli("train", "--data", root, "--split", split, *args, "--out", tmp_path / "m.pt")
    assert result.exit_code == 2
    assert f"Invalid value for '{option}'" in result.stderr
    assert not (tmp_path / "m.pt").exists()


@pytest.mark.parametrize(
    "args,message",
    [
        (["--batch-size", "10", "--per-class", "4"], "multiple of the images per class"),
        (["--batch-size", "40", "--per-class", "10"], "needs 4 classes"),
    ],
)
def test_train_command_refuses_batches_without_triplets_in_one_line(
    tmp_path, image_folder, run_cli, args, message
):
    root, split = image_folder
    result = run_cli("train", "--data", root, "--split", split, *args, "--out", tmp_path / "m.pt")
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("hashkit: error:")]
    assert len(errors) == 1 and message in errors[0]
    assert "epoch" not in result.stderr
    assert not (tmp_path / "m.pt").exists()


def test_bench_command_refuses_one_bit(tmp_path, run_cli):
    result = run_cli("bench", "--bits", "1", "--out", tmp_path)
    assert result.exit_code == 2 and "Invalid value for '--bits'" in result.stderr


def test_an_interrupted_run_into_an_existing_model_leaves_that_models_epoch_log(
    tmp_path, image_folder, run_cli, monkeypatch
):
    """A new run into model.pt writes its log as model.epochs.csv.partial and renames it only
    once its bundle is written: interrupted, the old model keeps its own log; resumed, the
    finished run's log takes its place."""
    import hashkit.epoch_log

    root, split = image_folder
    out = tmp_path / "model.pt"
    args = ["train", "--data", root, "--split", split, "--bits", "12", "--batch-size", "12",
            "--per-class", "4", "--rotation-steps", "2", "--out", out, "-q"]  # fmt: skip
    assert run_cli(*args, "--epochs", "3").exit_code == 0
    log = tmp_path / "model.epochs.csv"
    old_log, old_model = log.read_bytes(), out.read_bytes()
    assert old_log.count(b"\n") == 4  # a header and 3 epochs
    add = hashkit.epoch_log.EpochLog.add

    def add_then_interrupt(self, record):
        add(self, record)
        raise KeyboardInterrupt

    monkeypatch.setattr(hashkit.epoch_log.EpochLog, "add", add_then_interrupt)
    assert run_cli(*args, "--epochs", "2", "--seed", "1").exit_code == 130
    assert log.read_bytes() == old_log and out.read_bytes() == old_model
    partial = tmp_path / "model.epochs.csv.partial"
    assert partial.read_text().count("\n") == 2  # the interrupted run's one epoch
    monkeypatch.setattr(hashkit.epoch_log.EpochLog, "add", add)
    assert run_cli(*args, "--epochs", "2", "--seed", "1", "--resume").exit_code == 0
    assert not partial.exists() and out.read_bytes() != old_model
    assert [row.split(",")[0] for row in log.read_text().splitlines()] == ["epoch", "1", "2"]
