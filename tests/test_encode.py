"""Encoding: devices that exist, finite embeddings only, progress counted in images, the batch
size the user asked for, and options that a plain image folder cannot honour."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import write_class_images

import hashkit.encode
from hashkit.bundle import Bundle, save_bundle
from hashkit.data import Dataset
from hashkit.device import check_device_name, resolve_device
from hashkit.encode import iter_dataset_codes, iter_file_codes
from hashkit.errors import HashkitError, ModelError
from hashkit.models import HashNet, NetworkConfig


def tiny_bundle(bits=16, channels=1) -> Bundle:
    torch.manual_seed(0)
    config = NetworkConfig(bits=bits, input_size=16, channels=channels)
    return Bundle(config, HashNet(config).state_dict(), np.eye(bits, dtype=np.float32))


@pytest.fixture
def model(tmp_path):
    save_bundle(tiny_bundle(channels=3), tmp_path / "model.pt")
    return tmp_path / "model.pt"


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)


class RecordingBar:
    """A tqdm stand-in: what a progress bar was made with and advanced by."""

    def __init__(self, bars, iterable=None, **kwargs):
        self.kwargs, self.updates, self.iterable = kwargs, [], iterable
        bars.append(self)

    def __iter__(self):
        yield from self.iterable

    def update(self, n=1):
        self.updates.append(n)

    def close(self):
        pass


def recording_progress(bars):
    return lambda iterable=None, **kwargs: RecordingBar(bars, iterable, **kwargs)


def array_dataset(n=40, seed=0) -> Dataset:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 16, 16), dtype=np.uint8)
    return Dataset(images=images, labels=np.arange(n) % 4, class_names=list("abcd"), name="t")


# --- devices --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["gpu7", "cuda:x", "CPU", "", "cuda:-1", "meta"])
def test_a_bogus_device_name_is_a_hashkit_error(name):
    with pytest.raises(HashkitError, match="unknown device"):
        resolve_device(name)
    with pytest.raises(HashkitError, match="use auto, cpu, cuda, cuda:N or mps"):
        check_device_name(name)


def test_cuda_without_a_gpu_is_a_clear_error_and_auto_falls_back_to_cpu(no_gpu):
    for name in ("cuda", "cuda:1"):
        with pytest.raises(HashkitError, match="sees no CUDA GPU on this machine"):
            resolve_device(name)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device(None) == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")


def test_a_gpu_index_beyond_the_machines_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(HashkitError, match="cuda:2' does not exist: PyTorch sees 2 CUDA GPU"):
        resolve_device("cuda:2")


def test_bogus_device_on_the_command_line_is_a_usage_error(tmp_path, model, run_cli):
    write_class_images(tmp_path / "images", classes=2, per_class=2)
    result = run_cli(
        "encode", "--model", model, tmp_path / "images", tmp_path / "c.h5", "--device", "gpu7"
    )
    assert result.exit_code == 2
    assert (
        "Invalid value for '--device'" in result.stderr and "unknown device 'gpu7'" in result.stderr
    )
    assert "Traceback" not in result.output


def test_cuda_without_a_gpu_on_the_command_line_is_one_line(tmp_path, model, run_cli, no_gpu):
    write_class_images(tmp_path / "images", classes=2, per_class=2)
    result = run_cli(
        "encode", "--model", model, tmp_path / "images", tmp_path / "c.h5", "--device", "cuda"
    )
    assert result.exit_code == 1 and not (tmp_path / "c.h5").exists()
    assert result.stderr.startswith("hashkit: error: device 'cuda'")
    assert len(result.stderr.splitlines()) == 1


# --- finite embeddings only -----------------------------------------------------------------


def broken_bundle() -> Bundle:
    """A bundle whose network outputs NaN (as after a diverged training), built in memory since
    save_bundle refuses it."""
    bundle = tiny_bundle()
    bundle.state_dict = {k: v.clone() for k, v in bundle.state_dict.items()}
    bundle.state_dict["net.head.4.bias"][:] = float("nan")
    return bundle


def test_nan_embeddings_are_refused_not_turned_into_zero_codes(tmp_path):
    with pytest.raises(ModelError, match="NaN or infinite embeddings for 40 of 40 images"):
        list(iter_dataset_codes(broken_bundle(), array_dataset(), np.arange(40), device="cpu"))
    write_class_images(tmp_path / "images", classes=1, per_class=2)
    paths = sorted(str(p) for p in (tmp_path / "images").rglob("*.png"))
    bundle = broken_bundle()
    bundle.network.channels = 3
    bundle.state_dict["net.features.0.0.weight"] = torch.zeros(32, 3, 3, 3)
    with pytest.raises(ModelError, match="did training diverge"):
        list(iter_file_codes(bundle, paths, device="cpu"))


def test_a_network_that_overflows_to_infinity_is_refused():
    bundle = tiny_bundle()
    bundle.state_dict = {k: v.clone() for k, v in bundle.state_dict.items()}
    bundle.state_dict["net.head.4.weight"][:] = 3e38
    with pytest.raises(ModelError, match="NaN or infinite embeddings"):
        list(iter_dataset_codes(bundle, array_dataset(), np.arange(40), device="cpu"))


# --- progress and batch size ----------------------------------------------------------------


def test_progress_counts_images_of_an_array_dataset_in_batches_of_batch_size(monkeypatch):
    seen = []
    forward = HashNet.forward

    def recording_forward(self, x):
        seen.append(len(x))
        return forward(self, x)

    monkeypatch.setattr(HashNet, "forward", recording_forward)
    bars = []
    batches = list(
        iter_dataset_codes(
            tiny_bundle(),
            array_dataset(),
            np.arange(40),
            batch_size=16,
            device="cpu",
            progress=recording_progress(bars),
        )
    )
    assert seen == [16, 16, 8] and [len(idx) for idx, _ in batches] == [16, 16, 8]
    (bar,) = bars
    assert bar.kwargs["total"] == 40 and bar.kwargs["unit"] == "img" and bar.updates == [16, 16, 8]


def test_progress_counts_image_files_including_unreadable_ones(tmp_path):
    write_class_images(tmp_path / "images", classes=1, per_class=5)
    (tmp_path / "images" / "class0" / "bad.png").write_bytes(b"not a png")
    paths = sorted(str(p) for p in (tmp_path / "images").rglob("*.png"))
    bars = []
    bundle = tiny_bundle(channels=3)
    codes = list(
        iter_file_codes(
            bundle, paths, batch_size=4, device="cpu", progress=recording_progress(bars)
        )
    )
    assert sum(len(p) for p, _ in codes) == 5
    (bar,) = bars
    assert bar.kwargs["total"] == 6 and bar.kwargs["unit"] == "img" and bar.updates == [4, 2]


def test_encode_command_feeds_the_network_batch_size_images(tmp_path, monkeypatch, run_cli):
    save_bundle(tiny_bundle(), tmp_path / "m.pt")
    seen = []
    real = hashkit.encode.embed_arrays

    def recording(net, images, **kwargs):
        seen.append((len(images), kwargs["batch_size"]))
        return real(net, images, **kwargs)

    monkeypatch.setattr(hashkit.encode, "embed_arrays", recording)
    monkeypatch.setattr(hashkit.data.load, "load_builtin", lambda name, root=None: array_dataset())
    split = tmp_path / "split.json"
    split.write_text('{"train": [0, 1], "query": [2, 3], "database": [4, 5, 6, 7, 8]}')
    result = run_cli(
        "encode", "--model", tmp_path / "m.pt", "--data", "mnist", "--split", split,
        "--batch-size", "3", "--part", "database", tmp_path / "db.h5", "-q",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert seen == [(3, 3), (2, 3)]


# --- options a folder cannot honour ---------------------------------------------------------


@pytest.mark.parametrize(
    "extra,named",
    [
        (["--part", "query"], "--part"),
        (["--protocol", "full"], "--protocol"),
        (["--split-seed", "3"], "--split-seed"),
    ],
)
def test_protocol_options_on_a_plain_image_folder_are_refused(
    tmp_path, model, run_cli, extra, named
):
    write_class_images(tmp_path / "images", classes=2, per_class=2)
    result = run_cli("encode", "--model", model, tmp_path / "images", tmp_path / "c.h5", *extra)
    assert result.exit_code == 1 and not (tmp_path / "c.h5").exists()
    assert named in result.stderr and "has no protocol parts" in result.stderr
    assert f"--data {tmp_path / 'images'}" in result.stderr


def test_export_images_help_shows_no_model_default(run_cli):
    result = run_cli("export-images", "--help")
    assert result.exit_code == 0
    assert "the model's" not in result.output
    assert "[default: fashion-mnist]" in " ".join(result.output.split())
    assert "or the model's" in run_cli("encode", "--help").output
