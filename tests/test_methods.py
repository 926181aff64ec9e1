"""``hashkit train --method``: every baseline trains from the command line on tiny images and
writes a bundle that loads, encodes and indexes like SDSH's; bundles describe their head."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from hashkit.bundle import Bundle, load_bundle, save_bundle
from hashkit.config import METHODS
from hashkit.errors import HashkitError, ModelError
from hashkit.methods import get_method
from hashkit.models import HEADS, HashNet, NetworkConfig

BASELINES = [m for m in METHODS if m != "sdsh"]
TINY = ["--bits", "8", "--epochs", "1", "--batch-size", "12", "--per-class", "4"]
TINY += ["--rotation-steps", "5", "-q"]


def test_every_method_has_a_head_a_paper_and_a_default_binarisation():
    for name in METHODS:
        method = get_method(name)
        assert method.name == name and method.head in HEADS and method.paper
        assert method.rotation == ("random-search" if name == "sdsh" else "none")
    with pytest.raises(HashkitError, match="unknown method 'itq'"):
        get_method("itq")


@pytest.mark.parametrize("method", BASELINES)
def test_train_method_writes_a_bundle_that_build_index_accepts(
    tmp_path, image_folder, run_cli, method
):
    root, split = image_folder
    model = tmp_path / f"{method}.pt"
    result = run_cli(
        "train", "--data", root, "--split", split, "--method", method, *TINY, "--out", model
    )
    assert result.exit_code == 0, result.output
    bundle = load_bundle(model)
    assert bundle.network.head == get_method(method).head
    assert bundle.train_config["method"] == method
    # Codes are sgn(h), as published: no rotation unless asked for.
    assert np.array_equal(bundle.rotation, np.eye(8, dtype=np.float32))
    index = tmp_path / f"{method}.faiss"
    result = run_cli("build-index", root, index, "--model", model, "-q")
    assert result.exit_code == 0, result.output
    with h5py.File(tmp_path / f"{method}.h5") as f:
        assert f["codes"].shape == (36, 1)


def test_a_baseline_takes_hashkits_rotation_when_asked(tmp_path, image_folder, run_cli):
    root, split = image_folder
    model = tmp_path / "csq.pt"
    result = run_cli(
        "train",
        "--data",
        root,
        "--split",
        split,
        "--method",
        "csq",
        *TINY,
        "--rotation",
        "itq",
        "--out",
        model,
    )
    assert result.exit_code == 0, result.output
    rotation = load_bundle(model).rotation
    assert not np.allclose(rotation, np.eye(8))
    np.testing.assert_allclose(rotation @ rotation.T, np.eye(8), atol=1e-5)


@pytest.mark.parametrize("option", [["--loss", "spring"], ["--alpha", "2"]])
def test_sdsh_loss_options_with_a_baseline_are_a_usage_error(tmp_path, run_cli, option):
    result = run_cli("train", "--method", "dpsh", *option, "--out", tmp_path / "m.pt")
    assert result.exit_code == 2
    assert "--method dpsh" in result.stderr and "Traceback" not in result.output


def test_bundles_without_a_head_are_sdsh_bundles_on_the_sphere(tmp_path):
    config = NetworkConfig(bits=8, input_size=16, channels=1)
    payload_config = config.to_dict()
    del payload_config["head"]  # as written before heads existed
    assert NetworkConfig.from_dict(payload_config).head == "sphere"
    net = HashNet(config).eval()
    h = net(torch.randn(3, 1, 16, 16))
    torch.testing.assert_close(h.norm(dim=1), torch.ones(3))


def test_a_batchnorm_bundle_keeps_its_running_statistics(tmp_path):
    config = NetworkConfig(bits=8, input_size=16, channels=1, head="batchnorm")
    net = HashNet(config)
    net.head.batchnorm.running_mean.fill_(0.25)
    path = tmp_path / "ortho.pt"
    save_bundle(Bundle(config, net.state_dict(), np.eye(8)), path)
    loaded = load_bundle(path).build_network()
    assert torch.equal(loaded.head.batchnorm.running_mean, torch.full((8,), 0.25))


def test_a_bundle_whose_weights_do_not_fit_its_head_is_refused(tmp_path):
    sphere = NetworkConfig(bits=8, input_size=16, channels=1)
    bn = NetworkConfig(bits=8, input_size=16, channels=1, head="batchnorm")
    with pytest.raises(ModelError, match="missing"):
        save_bundle(Bundle(bn, HashNet(sphere).state_dict(), np.eye(8)), tmp_path / "a.pt")
    with pytest.raises(ModelError, match="unknown head"):
        NetworkConfig.from_dict({**sphere.to_dict(), "head": "sigmoid"})
