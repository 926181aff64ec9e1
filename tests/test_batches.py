"""Whole uint8 batches: training batches from arrays and from files agree, are seeded, and
report a bad file; decoded file batches keep their positions; OpenMP waits passively."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from hashkit.data import Dataset
from hashkit.data.batches import TrainingBatches, collate_decoded, decoded_file_loader
from hashkit.data.torch_images import ImageTransform
from hashkit.errors import DataError

BATCHES = [np.array([0, 3, 5, 6]), np.array([7, 1, 2, 4])]


def grey_dataset(n=10, size=12, seed=0) -> Dataset:
    rng = np.random.default_rng(seed)
    return Dataset(
        images=rng.integers(0, 256, (n, size, size), dtype=np.uint8),
        labels=(np.arange(n) % 3).astype(np.int64),
        class_names=["a", "b", "c"],
        name="grey",
    )


def as_files(ds: Dataset, folder) -> Dataset:
    """The same images as PNG files (lossless), same labels."""
    paths = []
    for i, image in enumerate(ds.images):
        paths.append(str(folder / f"{i}.png"))
        Image.fromarray(image).save(paths[-1])
    return Dataset(images=None, paths=paths, labels=ds.labels, class_names=ds.class_names)


def collect(batches):
    return [(x.clone(), y.clone(), idx.clone()) for x, y, idx in batches]


def test_array_batches_are_the_transformed_rows_of_the_batch_indices():
    ds = grey_dataset()
    indices = np.array([9, 8, 7, 6, 5, 4, 3, 2])
    transform = ImageTransform(12, 1, (0.4,), (0.2,), augment="crop")
    batches = TrainingBatches(
        ds, indices, transform, BATCHES, generator=torch.Generator().manual_seed(1)
    )
    reference = torch.Generator().manual_seed(1)
    assert len(batches) == 2
    for (x, y, idx), positions in zip(batches, BATCHES):
        expected_idx = indices[positions]
        assert idx.tolist() == expected_idx.tolist()
        assert y.dtype == torch.int64 and y.tolist() == ds.labels[expected_idx].tolist()
        assert torch.equal(x, transform.batch(ds.images[expected_idx], reference))


def test_a_seed_fixes_the_augmented_batches_and_another_seed_changes_them():
    ds = grey_dataset()
    transform = ImageTransform(12, 1, augment="crop-flip")

    def run(seed):
        generator = torch.Generator().manual_seed(seed)
        return collect(TrainingBatches(ds, np.arange(8), transform, BATCHES, generator=generator))

    first, again, other = run(0), run(0), run(1)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first, again))
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(first, other))


@pytest.mark.parametrize("workers", [0, 1])
def test_file_batches_equal_array_batches_of_the_same_pixels(tmp_path, workers):
    ds = grey_dataset()
    files = as_files(ds, tmp_path)
    transform = ImageTransform(12, 1, augment="crop")
    indices = np.arange(1, 9)

    def run(data, num_workers):
        generator = torch.Generator().manual_seed(3)
        batches = TrainingBatches(
            data, indices, transform, BATCHES, generator=generator, num_workers=num_workers
        )
        return collect(batches) + collect(batches)  # two epochs

    for (xa, ya, ia), (xf, yf, i_f) in zip(run(ds, 0), run(files, workers)):
        assert torch.equal(xa, xf) and torch.equal(ya, yf) and torch.equal(ia, i_f)


def test_an_unreadable_training_file_is_a_data_error_naming_it(tmp_path):
    files = as_files(grey_dataset(), tmp_path)
    (tmp_path / "5.png").write_bytes(b"not a png")
    batches = TrainingBatches(files, np.arange(8), ImageTransform(12, 1), BATCHES)
    with pytest.raises(DataError, match=r"5\.png"):
        collect(batches)


def test_decoded_file_batches_are_uint8_and_skip_bad_files_with_their_positions(tmp_path):
    files = as_files(grey_dataset(n=5, size=20), tmp_path)
    (tmp_path / "2.png").write_bytes(b"broken")
    rgb = ImageTransform(8, 3)  # grey files are fitted to the model's size and channels
    batches = list(decoded_file_loader(files.paths, rgb, batch_size=3))
    (images, positions, bad), (images2, positions2, bad2) = batches
    assert images.dtype == torch.uint8 and images.shape == (2, 8, 8, 3)
    assert positions.tolist() == [0, 1] and positions2.tolist() == [3, 4]
    assert [i for i, _ in bad] == [2] and "2.png" in bad[0][1] and bad2 == []
    assert collate_decoded([(None, 0, "bad")])[0] is None


OPENMP_POLICY = """
import os, sys
import hashkit.cli.main as cli
cli.cli.add_command(cli.click.Command(sys.argv[1], callback=lambda: None))  # a stand-in
cli.cli([sys.argv[1]], standalone_mode=False)
print(os.environ.get("OMP_WAIT_POLICY", "unset"))
"""


@pytest.mark.parametrize(
    "command,policy",
    [("train", "PASSIVE"), ("build-index", "PASSIVE"), ("serve", "PASSIVE"),
     ("search", "unset"), ("bench", "unset")],
)  # fmt: skip
def test_bulk_commands_make_openmp_threads_sleep_and_searches_keep_the_default(command, policy):
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    run = lambda env: subprocess.run(  # noqa: E731
        [sys.executable, "-c", OPENMP_POLICY, command],
        env=env, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    assert run(env) == policy
    assert run({**env, "OMP_WAIT_POLICY": "ACTIVE"}) == "ACTIVE"  # the user's choice wins
    # and a plain import leaves it alone (a library user's FAISS searches keep spinning)
    plain = subprocess.run(
        [sys.executable, "-c", "import hashkit, os; print(os.environ.get('OMP_WAIT_POLICY'))"],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert plain.stdout.strip() == "None"


@pytest.mark.parametrize("augment", ["none", "crop", "crop-flip", "affine"])
@pytest.mark.parametrize(
    "shape,channels", [((4, 12, 12), 1), ((4, 20, 16, 3), 1), ((4, 12, 12, 3), 3)]
)
def test_batches_are_computed_on_the_images_device(augment, shape, channels):
    # A GPU stand-in: torch's fake tensors on a "cuda" device that is not there. Like a real
    # GPU they refuse any CPU tensor mixed into the computation (the random offsets and
    # flips, the luma weights, the mean and std), so this catches one that would be.
    from torch._subclasses.fake_tensor import FakeTensorMode

    transform = ImageTransform(12, channels, (0.5,), (0.25,), augment=augment)
    with FakeTensorMode(allow_non_fake_inputs=True):
        images = torch.empty(shape, dtype=torch.uint8, device="cuda")
        x = transform.batch(images, torch.Generator().manual_seed(0))
    assert x.device.type == "cuda" and x.shape == (4, channels, 12, 12)
    assert x.dtype == torch.float32
