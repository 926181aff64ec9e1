"""Model bundles: only files this hashkit can trust and use are loaded, and every refusal is one
line naming the user's file (never PyTorch's advice to load with weights_only=False)."""

from __future__ import annotations

import os
import zipfile

import numpy as np
import pytest
import torch

import hashkit.torch_load
from hashkit.bundle import FORMAT_VERSION, Bundle, load_bundle, save_bundle
from hashkit.errors import ModelError
from hashkit.models import HashNet, NetworkConfig


def tiny_bundle(bits=8) -> Bundle:
    torch.manual_seed(0)
    config = NetworkConfig(bits=bits, input_size=8, channels=1)
    return Bundle(config, HashNet(config).state_dict(), np.eye(bits, dtype=np.float32))


def payload_of(bundle: Bundle, path) -> dict:
    """The dict save_bundle writes, to be tampered with."""
    save_bundle(bundle, path)
    return torch.load(path, weights_only=True)


def refused(path) -> str:
    """The one-line message load_bundle refuses ``path`` with."""
    with pytest.raises(ModelError) as err:
        load_bundle(path)
    message = str(err.value)
    assert str(path) in message and "\n" not in message
    assert "weights_only=False" not in message and "weights_only" not in message
    return message


def test_a_saved_bundle_loads_back_with_the_same_contents(tmp_path):
    bundle = tiny_bundle()
    save_bundle(bundle, tmp_path / "m.pt")
    loaded = load_bundle(tmp_path / "m.pt")
    assert loaded.network == bundle.network and loaded.fingerprint == bundle.fingerprint
    np.testing.assert_array_equal(loaded.rotation, bundle.rotation)


def test_a_format_version_this_hashkit_does_not_know_is_refused(tmp_path):
    payload = payload_of(tiny_bundle(), tmp_path / "m.pt")
    payload["format_version"] = 99
    torch.save(payload, tmp_path / "v99.pt")
    message = refused(tmp_path / "v99.pt")
    assert "format version 99" in message and f"reads version {FORMAT_VERSION}" in message
    assert "upgrade hashkit" in message
    payload["format_version"] = "1"
    torch.save(payload, tmp_path / "vstr.pt")
    assert "format_version '1' is not an integer" in refused(tmp_path / "vstr.pt")


def test_empty_truncated_and_foreign_files_are_one_line(tmp_path):
    (tmp_path / "empty.pt").write_bytes(b"")
    assert "empty (0 bytes)" in refused(tmp_path / "empty.pt")
    save_bundle(tiny_bundle(), tmp_path / "m.pt")
    whole = (tmp_path / "m.pt").read_bytes()
    (tmp_path / "half.pt").write_bytes(whole[: len(whole) // 2])
    assert "not a PyTorch zip file" in refused(tmp_path / "half.pt")
    (tmp_path / "text.pt").write_text("hello, not a model")
    assert "not a PyTorch zip file" in refused(tmp_path / "text.pt")
    with zipfile.ZipFile(tmp_path / "zip.pt", "w") as z:
        z.writestr("a.txt", "x")
    refused(tmp_path / "zip.pt")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    assert "not a hashkit model bundle" in refused(tmp_path / "list.pt")


def test_a_bundle_that_would_run_code_is_refused_without_torchs_advice(tmp_path):
    class RunsCode:
        def __reduce__(self):
            return (os.system, ("echo ran > " + str(tmp_path / "ran"),))

    torch.save({"format": "hashkit-model", "payload": RunsCode()}, tmp_path / "evil.pt")
    message = refused(tmp_path / "evil.pt")
    assert "refused without running them" in message
    assert not (tmp_path / "ran").exists()


@pytest.mark.parametrize(
    "change,expected",
    [
        (lambda p: p.pop("network"), "'network' is missing"),
        (lambda p: p.pop("rotation"), "'rotation' is missing"),
        (lambda p: p.update(network=[8]), "'network' is a list, not a dict"),
        (lambda p: p.update(state_dict="weights"), "'state_dict' is a str, not a dict"),
        (lambda p: p.update(rotation=[[1.0]]), "'rotation' is a list, not a Tensor"),
        (lambda p: p.update(class_names="cats"), "'class_names' is a str, not a list"),
        (lambda p: p.update(class_names=[1, 2]), "class_names are not text"),
        (lambda p: p["network"].update(bits="8"), "bits must be a positive integer"),
        (lambda p: p["network"].update(bits=0), "bits must be a positive integer"),
        (lambda p: p["network"].update(channels=2), "channels must be 1 or 3"),
        (lambda p: p["network"].update(backbone="lenet"), "unknown backbone 'lenet'"),
        (lambda p: p["network"].update(std=[0.0]), "std must be positive"),
        (lambda p: p["network"].update(mean=[float("nan")]), "mean must be 1 or 1 finite"),
        (lambda p: p["network"].update(bits=16), "a small-cnn network of 16 bits needs (16, 256)"),
        (lambda p: p.update(rotation=torch.eye(4)), "rotation of shape (4, 4) for 8 bits"),
        (lambda p: p["state_dict"].popitem(), "weights do not fit a small-cnn network of 8 bits"),
        (lambda p: p["state_dict"].update(extra=torch.zeros(1)), "1 unexpected, e.g. 'extra'"),
        (
            lambda p: p["state_dict"].update({"net.head.4.weight": torch.zeros(9, 256)}),
            "'net.head.4.weight' has shape (9, 256), a small-cnn network of 8 bits needs (8, 256)",
        ),
        (lambda p: p["state_dict"].update({"net.head.4.bias": [0.0] * 8}), "is a list, not a"),
        (lambda p: p.update(rotation=torch.eye(8, dtype=torch.int64)), "not floating point"),
    ],
)
def test_malformed_bundles_are_one_line_naming_the_file(tmp_path, change, expected):
    payload = payload_of(tiny_bundle(), tmp_path / "m.pt")
    change(payload)
    torch.save(payload, tmp_path / "bad.pt")
    assert expected in refused(tmp_path / "bad.pt")


def test_nan_rotation_or_weights_are_refused_at_load_and_never_saved(tmp_path):
    payload = payload_of(tiny_bundle(), tmp_path / "m.pt")
    payload["rotation"][2, 3] = float("nan")
    torch.save(payload, tmp_path / "nan_r.pt")
    assert "rotation holds NaN or infinite values" in refused(tmp_path / "nan_r.pt")
    payload = payload_of(tiny_bundle(), tmp_path / "m.pt")
    payload["state_dict"]["net.head.1.weight"][0, 0] = float("inf")
    torch.save(payload, tmp_path / "inf_w.pt")
    assert "'net.head.1.weight' holds NaN or infinite values" in refused(tmp_path / "inf_w.pt")

    bundle = tiny_bundle()
    bundle.rotation[0, 0] = np.nan
    with pytest.raises(ModelError, match="cannot save model bundle .*rotation holds NaN"):
        save_bundle(bundle, tmp_path / "never.pt")
    assert not (tmp_path / "never.pt").exists()


def test_bundles_are_read_with_weights_only(tmp_path, monkeypatch):
    save_bundle(tiny_bundle(), tmp_path / "m.pt")
    seen = []
    real_load = torch.load

    def recording_load(*args, **kwargs):
        seen.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(hashkit.torch_load.torch, "load", recording_load)
    load_bundle(tmp_path / "m.pt")
    assert seen == [True]


def test_a_folder_or_a_missing_file_is_named(tmp_path):
    with pytest.raises(ModelError, match="is a folder"):
        load_bundle(tmp_path)
    with pytest.raises(ModelError, match="model not found"):
        load_bundle(tmp_path / "absent.pt")
