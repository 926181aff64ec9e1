"""Backbones at small inputs, and ImageNet weights from a local file (nothing downloaded)."""

from __future__ import annotations

import pytest
import torch

from hashkit.errors import ModelError
from hashkit.models import HashNet, NetworkConfig, inference_network, load_pretrained


@pytest.mark.parametrize(
    "backbone,size,channels",
    [("small-cnn", 28, 1), ("small-cnn", 32, 3), ("resnet18", 64, 3), ("alexnet", 64, 3)],
)
def test_every_backbone_maps_images_onto_the_unit_sphere(backbone, size, channels):
    net = HashNet(NetworkConfig(bits=12, backbone=backbone, input_size=size, channels=channels))
    net.eval()
    with torch.no_grad():
        h = net(torch.randn(2, channels, size, size))
    assert h.shape == (2, 12)
    torch.testing.assert_close(h.norm(dim=1), torch.ones(2))


@pytest.mark.parametrize("backbone", ["resnet50", "vgg16"])
def test_large_backbones_end_in_a_bits_wide_layer(backbone):
    net = HashNet(NetworkConfig(bits=24, backbone=backbone, input_size=224, channels=3))
    last = [m for m in net.modules() if isinstance(m, torch.nn.Linear)][-1]
    assert last.out_features == 24


def test_torchvision_backbones_refuse_grey_input():
    with pytest.raises(ModelError, match="3-channel"):
        HashNet(NetworkConfig(bits=12, backbone="resnet18", input_size=64, channels=1))


def test_unknown_backbone_is_a_model_error():
    with pytest.raises(ModelError, match="unknown backbone"):
        HashNet(NetworkConfig(bits=12, backbone="lenet"))


def test_pretrained_weights_load_from_a_local_file_except_the_last_layer(tmp_path):
    import torchvision

    donor = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18-imagenet.pth"
    torch.save(donor.state_dict(), path)
    net = HashNet(NetworkConfig(bits=16, backbone="resnet18", input_size=64, channels=3))
    missing = load_pretrained(net, path)
    assert missing == ["fc.bias", "fc.weight"]
    torch.testing.assert_close(net.net.conv1.weight, donor.conv1.weight)
    torch.testing.assert_close(net.net.layer4[1].bn2.running_mean, donor.layer4[1].bn2.running_mean)


def test_missing_cached_weights_say_where_to_put_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    net = HashNet(NetworkConfig(bits=16, backbone="resnet18", input_size=64, channels=3))
    with pytest.raises(ModelError) as err:
        load_pretrained(net, None)
    message = str(err.value)
    assert str(tmp_path / "hub" / "checkpoints") in message
    assert "--pretrained FILE" in message


def test_missing_weight_file_and_weights_of_another_network_are_refused(tmp_path):
    net = HashNet(NetworkConfig(bits=16, backbone="resnet18", input_size=64, channels=3))
    with pytest.raises(ModelError, match="not found"):
        load_pretrained(net, tmp_path / "absent.pth")
    other = tmp_path / "other.pth"
    torch.save({"features.0.weight": torch.zeros(3)}, other)
    with pytest.raises(ModelError, match="no weights that fit"):
        load_pretrained(net, other)


def test_small_cnn_has_no_pretrained_weights():
    net = HashNet(NetworkConfig(bits=16))
    with pytest.raises(ModelError, match="small-cnn"):
        load_pretrained(net, None)


def test_small_cnn_with_relu_before_the_pool_loads_and_computes_the_same():
    # bundles saved before ReLU moved after the max-pool hold the same weight names, and
    # the two orders give the same embeddings and gradients bit for bit
    torch.manual_seed(4)
    net = HashNet(NetworkConfig(bits=16, input_size=28, channels=1))
    old = HashNet(NetworkConfig(bits=16, input_size=28, channels=1))
    for block in old.net.features:
        block[2], block[3] = block[3], block[2]
    assert isinstance(old.net.features[0][2], torch.nn.ReLU)
    old.load_state_dict(net.state_dict())
    x = torch.randn(6, 1, 28, 28)
    torch.manual_seed(0)  # the same dropout in both (training mode)
    h_new = net(x)
    torch.manual_seed(0)
    h_old = old(x)
    assert torch.equal(h_new, h_old)
    h_new.square().sum().backward()
    h_old.square().sum().backward()
    for (name, a), (_, b) in zip(net.named_parameters(), old.named_parameters()):
        assert torch.equal(a.grad, b.grad), name


@pytest.mark.parametrize(
    "backbone,size,channels", [("small-cnn", 28, 1), ("small-cnn", 32, 3), ("resnet18", 32, 3)]
)
def test_inference_network_folds_batch_norms_and_keeps_the_embeddings(backbone, size, channels):
    torch.manual_seed(5)
    net = HashNet(NetworkConfig(bits=16, backbone=backbone, input_size=size, channels=channels))
    net.train()
    with torch.no_grad():  # running statistics that are not the identity
        for _ in range(3):
            net(torch.randn(8, channels, size, size) * 2 + 0.5)
    net.eval()
    folded = inference_network(net)
    norms = lambda m: [x for x in m.modules() if isinstance(x, torch.nn.BatchNorm2d)]  # noqa: E731
    assert norms(net) and not norms(folded)
    assert inference_network(folded) is folded
    x = torch.randn(5, channels, size, size)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), net(x), atol=1e-5, rtol=0)
