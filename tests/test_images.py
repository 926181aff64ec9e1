"""Image files: 16-bit images scaled (not clipped), only the listed formats decoded, and folder
listings that report what they leave out (unreadable sub-folders, names that are not UTF-8)."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from conftest import write_class_images
from PIL import EpsImagePlugin, Image

from hashkit.bundle import Bundle, save_bundle
from hashkit.data import ImageTransform, load_dataset
from hashkit.data.folder import find_images, load_image_folder
from hashkit.data.images import IMAGE_EXTENSIONS, PIL_FORMATS, open_image
from hashkit.encode import iter_file_codes, iter_file_embeddings
from hashkit.errors import DataError
from hashkit.models import HashNet, NetworkConfig

EPS = (
    b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\n"
    b"newpath 0 0 moveto 8 8 lineto stroke\nshowpage\n%%EOF\n"
)


@pytest.fixture
def ghostscript_calls(monkeypatch):
    """Every call PIL's EPS plugin makes to Ghostscript, recorded instead of run."""
    calls = []

    def fake_ghostscript(*args, **kwargs):
        calls.append(args)
        raise OSError("Ghostscript must never run")

    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", fake_ghostscript)
    return calls


@pytest.fixture
def model(tmp_path):
    torch.manual_seed(0)
    config = NetworkConfig(bits=16, input_size=16, channels=1)
    bundle = Bundle(config, HashNet(config).state_dict(), np.eye(16, dtype=np.float32))
    save_bundle(bundle, tmp_path / "model.pt")
    return tmp_path / "model.pt"


def grey_ramp() -> np.ndarray:
    return (np.arange(16 * 16).reshape(16, 16) % 256).astype(np.uint8)


# --- 16-bit images --------------------------------------------------------------------------


def test_a_16_bit_png_copy_of_an_8_bit_image_decodes_to_the_same_pixels(tmp_path):
    eight = grey_ramp()
    Image.fromarray(eight).save(tmp_path / "8.png")
    Image.fromarray(eight.astype(np.uint16) * 257).save(tmp_path / "16.png")
    with Image.open(tmp_path / "16.png") as check:
        assert check.mode in ("I;16", "I")  # PIL really reads a 16-bit image
    np.testing.assert_array_equal(np.asarray(open_image(tmp_path / "16.png")), eight)
    transform = ImageTransform(16, 1)
    torch.testing.assert_close(
        transform(open_image(tmp_path / "16.png")), transform(open_image(tmp_path / "8.png"))
    )


@pytest.mark.parametrize("dtype", [np.uint16, np.int32])  # PIL modes I;16 and I
def test_wide_images_given_to_the_transform_are_scaled_not_clipped(dtype):
    eight = grey_ramp()
    wide = Image.fromarray(eight.astype(dtype) * 257)
    assert wide.mode == ("I;16" if dtype == np.uint16 else "I")
    transform = ImageTransform(16, 3)
    torch.testing.assert_close(transform(wide), transform(Image.fromarray(eight)))


def test_a_16_bit_copy_of_a_stored_image_gets_the_same_code(tmp_path, model):
    from hashkit.bundle import load_bundle

    eight = grey_ramp()
    Image.fromarray(eight).save(tmp_path / "8.png")
    Image.fromarray(eight.astype(np.uint16) * 257).save(tmp_path / "16.png")
    paths = [str(tmp_path / "8.png"), str(tmp_path / "16.png")]
    bundle = load_bundle(model)
    (_, h), *_ = iter_file_embeddings(bundle.build_network(), paths, strict=True)
    np.testing.assert_allclose(h[0], h[1], atol=1e-6)
    (_, codes), *_ = iter_file_codes(bundle, paths, device="cpu", strict=True)
    np.testing.assert_array_equal(codes[0], codes[1])


# --- formats --------------------------------------------------------------------------------


def test_postscript_named_png_is_refused_without_running_ghostscript(tmp_path, ghostscript_calls):
    (tmp_path / "drawing.png").write_bytes(EPS)
    with pytest.raises(DataError, match=r"drawing\.png: not a BMP, GIF, JPEG, PNG"):
        open_image(tmp_path / "drawing.png")
    assert ghostscript_calls == []


def test_postscript_among_images_is_skipped_and_counted_or_fails_with_strict(
    tmp_path, model, ghostscript_calls, run_cli
):
    write_class_images(tmp_path / "images", classes=1, per_class=3)
    (tmp_path / "images" / "class0" / "evil.png").write_bytes(EPS)
    result = run_cli("encode", "--model", model, tmp_path / "images", tmp_path / "c.h5", "-q")
    assert result.exit_code == 0, result.output
    assert "skipped 1 unreadable image(s)" in result.stderr and "evil.png" in result.stderr
    assert "wrote" in result.stdout and ": 3 16-bit codes" in result.stdout
    result = run_cli(
        "encode", "--model", model, tmp_path / "images", tmp_path / "d.h5", "-q", "--strict"
    )
    assert result.exit_code == 1
    assert "evil.png: not a BMP" in result.stderr and not (tmp_path / "d.h5").exists()
    assert ghostscript_calls == []


def test_an_image_of_a_listed_format_under_another_listed_extension_still_opens(tmp_path):
    Image.fromarray(np.full((8, 8, 3), 200, np.uint8)).save(tmp_path / "photo.png", "JPEG")
    assert open_image(tmp_path / "photo.png").size == (8, 8)


def test_every_listed_extension_is_decoded_by_a_listed_format(tmp_path):
    formats = {".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF", ".tiff": "TIFF"}
    formats.update({".pgm": "PPM", ".ppm": "PPM"})
    for ext in IMAGE_EXTENSIONS:
        fmt = formats.get(ext, ext[1:].upper())
        assert fmt in PIL_FORMATS
        Image.fromarray(grey_ramp()).save(tmp_path / f"a{ext}", fmt)
        assert open_image(tmp_path / f"a{ext}").size == (16, 16)


# --- what a folder listing leaves out -------------------------------------------------------


@pytest.fixture
def unreadable_folder(monkeypatch):
    """Make listing one folder fail as it does without read permission (tests run as root,
    for whom chmod changes nothing)."""
    real_scandir = os.scandir
    blocked = []

    def scandir(path="."):
        if os.fspath(path) in blocked:
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    return blocked


def test_unreadable_sub_folder_is_reported_not_skipped_silently(tmp_path, unreadable_folder):
    write_class_images(tmp_path / "images", classes=3, per_class=2)
    unreadable_folder.append(str(tmp_path / "images" / "class1"))
    skipped = []
    ds = load_image_folder(str(tmp_path / "images"), skipped=skipped)
    assert len(ds) == 4 and ds.class_names == ["class0", "class2"]
    assert skipped == [(str(tmp_path / "images" / "class1"), "Permission denied")]
    with pytest.raises(DataError, match="class1: Permission denied"):
        load_image_folder(str(tmp_path / "images"))


def test_encode_build_index_and_add_warn_about_an_unreadable_sub_folder(
    tmp_path, model, unreadable_folder, run_cli
):
    write_class_images(tmp_path / "images", classes=2, per_class=2)
    unreadable_folder.append(str(tmp_path / "images" / "class1"))
    line = f"skipped 1 unreadable folder(s) or file name(s), e.g. {tmp_path}/images/class1"
    result = run_cli("encode", "--model", model, tmp_path / "images", tmp_path / "c.h5", "-q")
    assert result.exit_code == 0 and line in result.stderr, result.output
    assert ": 2 16-bit codes" in result.stdout
    out = tmp_path / "i.faiss"
    result = run_cli("build-index", tmp_path / "images", out, "--model", model, "-q")
    assert result.exit_code == 0 and line in result.stderr, result.output
    write_class_images(tmp_path / "new", classes=2, per_class=1, seed=3)
    unreadable_folder.append(str(tmp_path / "new" / "class0"))
    result = run_cli("add", out, tmp_path / "new", "-q")
    assert result.exit_code == 0, result.output
    assert "skipped 1 unreadable folder(s)" in result.stderr and "added 1 image(s)" in result.stdout
    result = run_cli("encode", "--model", model, tmp_path / "images", tmp_path / "d.h5", "--strict")
    assert result.exit_code == 1 and "class1: Permission denied" in result.stderr


def test_symlinked_class_folder_is_followed_and_a_loop_listed_once(tmp_path):
    write_class_images(tmp_path / "elsewhere", classes=1, per_class=2)
    write_class_images(tmp_path / "images", classes=1, per_class=2)
    os.symlink(tmp_path / "elsewhere" / "class0", tmp_path / "images" / "linked")
    os.symlink(tmp_path / "images", tmp_path / "images" / "class0" / "loop")
    ds = load_image_folder(str(tmp_path / "images"))
    assert ds.class_names == ["class0", "linked"] and len(ds) == 4


def test_file_names_that_are_not_utf8_are_skipped_and_reported(tmp_path, model, run_cli):
    write_class_images(tmp_path / "images", classes=1, per_class=2)
    folder = os.fsencode(tmp_path / "images" / "class0")
    Image.fromarray(grey_ramp()).save(tmp_path / "images" / "class0" / "caf.png")
    os.rename(os.path.join(folder, b"caf.png"), os.path.join(folder, b"caf\xe9.png"))
    skipped = []
    rel = find_images(str(tmp_path / "images"), skipped)
    assert rel == [os.path.join("class0", "000.png"), os.path.join("class0", "001.png")]
    assert skipped[0][0].endswith("caf\\xe9.png") and "not valid UTF-8" in skipped[0][1]
    with pytest.raises(DataError, match="not valid UTF-8"):
        load_dataset(str(tmp_path / "images"))
    store = tmp_path / "codes.h5"
    result = run_cli("encode", "--model", model, tmp_path / "images", store, "-q")
    assert result.exit_code == 0, result.output
    assert "skipped 1 unreadable folder(s) or file name(s)" in result.stderr
    assert "caf\\xe9.png: name is not valid UTF-8" in result.stderr
    out = tmp_path / "x.faiss"
    assert run_cli("build-index", store, out).exit_code == 0
    result = run_cli("search", out, tmp_path / "images" / "class0" / "000.png", "-k", "2")
    assert result.exit_code == 0 and "000.png" in result.stdout


def test_one_class_folder_says_one_class_and_what_training_needs(tmp_path, run_cli):
    write_class_images(tmp_path / "cats", classes=1, per_class=4)
    ds = load_dataset(str(tmp_path / "cats"))
    assert ds.class_names == ["class0"] and ds.labels.tolist() == [0, 0, 0, 0]
    result = run_cli("train", "--data", tmp_path / "cats", "--out", tmp_path / "m.pt")
    assert result.exit_code == 1
    assert "one class" in result.stderr and "at least two classes" in result.stderr
    assert "unlabelled" not in result.stderr and len(result.stderr.splitlines()) == 1
