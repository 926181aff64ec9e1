"""The CUDA paths give what the CPU gives: training batches, training, encoding files and
arrays, and the GPU flat index. Every test here is marked ``gpu``: skipped without a GPU (see
conftest.py), run by benchmarks/gpu/run.sh on a machine with one."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import write_class_images

from hashkit.config import TrainConfig
from hashkit.data import Dataset
from hashkit.data.batches import TrainingBatches
from hashkit.data.torch_images import ImageTransform
from hashkit.encode import embed_arrays, find_images, iter_file_embeddings
from hashkit.models import HashNet, NetworkConfig
from hashkit.train import train_network

pytestmark = pytest.mark.gpu


def labelled_images(n=60, size=16, seed=0) -> Dataset:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 3
    base = rng.integers(0, 256, (3, size, size))
    images = np.clip(base[labels] + rng.normal(0, 20, (n, size, size)), 0, 255)
    return Dataset(images=images.astype(np.uint8), labels=labels.astype(np.int64), name="t")


def trained_net(channels=1, size=16) -> HashNet:
    torch.manual_seed(0)
    net = HashNet(NetworkConfig(bits=16, input_size=size, channels=channels))
    with torch.no_grad():  # batch-norm statistics that are not the identity
        net(torch.randn(32, channels, size, size) * 2 + 1)
    return net.eval()


def test_training_batches_on_cuda_equal_the_cpu_batches():
    ds = labelled_images()
    transform = ImageTransform(16, 1, (0.4,), (0.3,), augment="crop-flip")
    batches = [np.arange(0, 30), np.arange(30, 60)]

    def run(device):
        generator = torch.Generator().manual_seed(7)
        return list(
            TrainingBatches(
                ds, np.arange(60), transform, batches, generator=generator, device=device
            )
        )

    for (x_gpu, y_gpu, i_gpu), (x_cpu, y_cpu, i_cpu) in zip(run("cuda"), run("cpu")):
        assert x_gpu.is_cuda
        torch.testing.assert_close(x_gpu.cpu(), x_cpu, atol=1e-6, rtol=0)
        assert torch.equal(y_gpu, y_cpu) and torch.equal(i_gpu, i_cpu)


def test_training_on_cuda_returns_a_network_on_cuda_with_finite_losses():
    ds = labelled_images()
    config = TrainConfig(bits=16, epochs=2, batch_size=30, per_class=10, device="cuda")
    net, losses = train_network(ds, np.arange(60), config)
    assert next(net.parameters()).is_cuda
    assert len(losses) == 2 and all(np.isfinite(losses))


def test_embedding_arrays_on_cuda_matches_the_cpu():
    net = trained_net()
    images = labelled_images().images
    on_cpu = embed_arrays(net, images, device="cpu")
    on_gpu = embed_arrays(net.to("cuda"), images, device="cuda")
    np.testing.assert_allclose(on_gpu, on_cpu, atol=1e-4)


def test_encoding_image_files_on_cuda_matches_the_cpu(tmp_path):
    write_class_images(tmp_path / "images")
    paths = find_images(tmp_path / "images")
    net = trained_net(channels=3)

    def embed(device):
        net.to(device)
        parts = list(iter_file_embeddings(net, paths, batch_size=8, device=device, strict=True))
        return np.concatenate([p for p, _ in parts]), np.concatenate([h for _, h in parts])

    positions_cpu, h_cpu = embed("cpu")
    positions_gpu, h_gpu = embed("cuda")
    assert positions_gpu.tolist() == positions_cpu.tolist() == list(range(len(paths)))
    np.testing.assert_allclose(h_gpu, h_cpu, atol=1e-4)


def test_gpu_flat_index_finds_the_cpu_flat_index_distances_and_ids():
    import faiss

    from hashkit.index import build_index, search_index_for

    rng = np.random.default_rng(1)
    codes = rng.integers(0, 256, (5000, 8), dtype=np.uint8)
    ids = np.arange(5000, dtype=np.int64) * 3 + 7
    index = build_index(codes, ids, 64, "flat")
    on_gpu, is_gpu = search_index_for(index, gpu=True)
    assert is_gpu
    D_gpu, I_gpu = on_gpu.search(codes[:50], 20)
    D_cpu, I_cpu = index.search(codes[:50], 20)
    np.testing.assert_array_equal(D_gpu, D_cpu)
    assert I_gpu[:, 0].tolist() == ids[:50].tolist()
    assert set(I_gpu.ravel()) <= set(ids.tolist())
    assert faiss.get_num_gpus() >= 1
