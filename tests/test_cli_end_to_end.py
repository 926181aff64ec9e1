"""The whole flow through the command line on a tiny generated image folder, and the errors a
user can cause: one line, non-zero exit, no traceback, no existing file damaged."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import write_class_images

from hashkit.bundle import save_bundle
from hashkit.models import HashNet, NetworkConfig

# batches of 3 classes x 4 images: the image_folder fixture has 3 classes
TRAIN = "--bits 12 --epochs 2 --batch-size 12 --per-class 4 --rotation-steps 5".split()


@pytest.fixture
def trained(tmp_path, image_folder, run_cli):
    root, split = image_folder
    model = tmp_path / "model.pt"
    result = run_cli("train", "--data", root, "--split", split, *TRAIN, "--out", model, "-q")
    assert result.exit_code == 0, result.output
    return root, model


def assert_one_line_error(result, *words):
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0]


def test_train_build_index_and_search_finds_the_query_itself_first(tmp_path, trained, run_cli):
    root, model = trained
    index = tmp_path / "out.faiss"
    result = run_cli("build-index", root, index, "--model", model, "-q")
    assert result.exit_code == 0, result.output
    assert index.is_file() and (tmp_path / "out.h5").is_file()
    with h5py.File(tmp_path / "out.h5") as f:
        assert f["codes"].shape == (36, 2) and f.attrs["bits"] == 12
    query = root / "class1" / "005.png"
    result = run_cli("search", index, query, "-k", "3", "--json")
    assert result.exit_code == 0, result.output
    (record,) = json.loads(result.stdout)
    assert record["query_id"] == 0 and record["query_path"] == str(query)
    hits = record["results"]
    assert hits[0]["distance"] == 0
    zero = [h["path"] for h in hits if h["distance"] == 0]
    assert str(query) in zero


def test_train_reports_map_before_and_after_rotation(tmp_path, image_folder, run_cli):
    root, split = image_folder
    result = run_cli(
        "train", "--data", root, "--split", split, *TRAIN, "--out", tmp_path / "m.pt", "-q"
    )
    assert result.exit_code == 0
    assert "sgn(h)" in result.stdout and "sgn(Rh)" in result.stdout


def test_ivf_index_over_twelve_bit_codes(tmp_path, trained, run_cli):
    root, model = trained
    index = tmp_path / "ivf.faiss"
    result = run_cli(
        "build-index", root, index, "--model", model, "--type", "ivf", "--nlist", "2", "-q"
    )
    assert result.exit_code == 0, result.output
    meta = json.loads((tmp_path / "ivf.faiss.json").read_text())
    assert meta["type"] == "ivf" and meta["params"]["nlist"] == 2 and meta["bits"] == 12


def test_unreadable_image_is_skipped_and_counted_or_fails_with_strict(tmp_path, trained, run_cli):
    root, model = trained
    (root / "class0" / "broken.png").write_bytes(b"not a png at all")
    result = run_cli("build-index", root, tmp_path / "a.faiss", "--model", model, "-q")
    assert result.exit_code == 0
    assert "skipped 1 unreadable image" in result.stderr
    with h5py.File(tmp_path / "a.h5") as f:
        assert len(f["codes"]) == 36
    result = run_cli("build-index", root, tmp_path / "b.faiss", "--model", model, "--strict")
    assert_one_line_error(result, "broken.png")
    assert not (tmp_path / "b.faiss").exists()


def test_encode_of_a_split_file_models_data_takes_its_split_and_other_data_no_seed_of_it(
    tmp_path, trained, run_cli
):
    """A model trained with --split FILE records split seed -1 (none): its own data, named
    again, gets that split; other data are read whole, not refused with a traceback."""
    root, model = trained
    result = run_cli(
        "encode", "--model", model, "--data", root, tmp_path / "q.h5", "--part", "query"
    )
    assert result.exit_code == 0, result.output
    with h5py.File(tmp_path / "q.h5") as f:
        assert f["ids"][:].tolist() == [0, 12, 24]
    other = tmp_path / "other"
    write_class_images(other, classes=2, per_class=5)
    result = run_cli("encode", "--model", model, "--data", other, tmp_path / "all.h5", "-q")
    assert result.exit_code == 0, result.output
    with h5py.File(tmp_path / "all.h5") as f:
        assert f["ids"][:].tolist() == list(range(10)) and "protocol" not in f.attrs
    # a part of them needs a protocol, which 5 images a class cannot fill: one line, exit 1
    result = run_cli(
        "encode", "--model", model, "--data", other, tmp_path / "p.h5", "--part", "query"
    )
    assert_one_line_error(result, "reduced")
    assert not (tmp_path / "p.h5").exists()


def test_missing_dataset_is_one_line(tmp_path, run_cli):
    result = run_cli("train", "--data", tmp_path / "nowhere", "--out", tmp_path / "m.pt")
    assert_one_line_error(result)
    assert not (tmp_path / "m.pt").exists()


def test_folder_without_images_is_one_line_and_keeps_the_old_index(tmp_path, trained, run_cli):
    root, model = trained
    index = tmp_path / "keep.faiss"
    assert run_cli("build-index", root, index, "--model", model, "-q").exit_code == 0
    before = index.read_bytes()
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    result = run_cli("build-index", empty, index, "--model", model)
    assert_one_line_error(result, "no image files")
    assert index.read_bytes() == before


def test_missing_model_is_one_line(tmp_path, image_folder, run_cli):
    root, _ = image_folder
    result = run_cli("build-index", root, tmp_path / "x.faiss", "--model", tmp_path / "no.pt")
    assert_one_line_error(result, "model not found")


def test_model_of_other_bits_than_the_index_is_refused(tmp_path, trained, run_cli):
    root, model = trained
    index = tmp_path / "out.faiss"
    assert run_cli("build-index", root, index, "--model", model, "-q").exit_code == 0
    other = tmp_path / "other.pt"
    config = NetworkConfig(bits=16, input_size=32, channels=3, mean=[0.5] * 3, std=[0.5] * 3)
    from hashkit.bundle import Bundle

    save_bundle(Bundle(config, HashNet(config).state_dict(), np.eye(16)), other)
    result = run_cli("search", index, root / "class0" / "000.png", "--model", other)
    assert_one_line_error(result, "bits")


def test_a_file_that_is_not_a_bundle_is_refused(tmp_path, image_folder, run_cli):
    root, _ = image_folder
    fake = tmp_path / "fake.pt"
    fake.write_bytes(b"\x00" * 100)
    result = run_cli("build-index", root, tmp_path / "x.faiss", "--model", fake)
    assert_one_line_error(result, "fake.pt")


def test_every_command_has_help_with_an_example_and_points_only_at_docs_that_exist(run_cli):
    from hashkit.cli.commands import COMMANDS

    repo = Path(__file__).resolve().parents[1]
    pages = [run_cli("--help").output]
    for command in COMMANDS:
        result = run_cli(command.name, "--help")
        assert result.exit_code == 0
        assert "Example" in result.output and f"hashkit {command.name} " in result.output
        pages.append(result.output)
    text = " ".join(" ".join(page.split()) for page in pages)  # undo the help's line wrapping
    assert "METHOD.md" not in text
    named = set(re.findall(r"docs/[\w.-]+\.md", text))
    assert named >= {"docs/method.md", "docs/cli.md"}
    assert all((repo / name).is_file() for name in named), named


def test_docs_cli_describes_every_command_and_every_option():
    """README promises that docs/cli.md describes every command and option: each command has
    its section, and each of its options is named there or among the shared options."""
    import click

    from hashkit.cli.commands import COMMANDS

    doc = (Path(__file__).resolve().parents[1] / "docs" / "cli.md").read_text()
    sections = dict(re.findall(r"^## ([^\n]+)\n(.*?)(?=^## |\Z)", doc, re.S | re.M))
    shared = sections["Options shared by several commands"]
    missing = []
    for command in COMMANDS:
        subcommands = list(command.commands.values()) if isinstance(command, click.Group) else []
        for cmd, title in [(command, command.name)] + [
            (sub, f"{command.name} {sub.name}") for sub in subcommands
        ]:
            if cmd is command and subcommands:
                continue  # a group: its sub-commands have the sections
            text = sections.get(f"hashkit {title}")
            if text is None:
                missing.append(f"section of hashkit {title}")
                continue
            for param in cmd.params:
                missing += [
                    f"hashkit {title} {opt}"
                    for opt in param.opts + param.secondary_opts
                    if opt.startswith("--")
                    and opt != "--help"
                    and not any(re.search(rf"[`/]{opt}\b", t) for t in (text, shared))
                ]
    assert not missing, missing


def test_bench_reuses_the_models_data_and_split_and_writes_json_md_png(tmp_path, trained, run_cli):
    _, model = trained
    out = tmp_path / "bench"
    result = run_cli("bench", "--model", model, "--out", out, "--top-k", "5", "-q")
    assert result.exit_code == 0, result.output
    report = json.loads((out / "bench.json").read_text())
    assert report["queries"] == 3 and report["database"] == 33
    assert 0.0 <= report["map"] <= 1.0 and "map_at_5" in report
    assert report["flat"]["qps_1_thread"] > 0
    assert all(0.0 <= row["recall"] <= 1.0 for row in report["ivf"]["sweep"])
    assert "mAP" in (out / "bench.md").read_text()
    assert (out / "bench.png").read_bytes()[:4] == b"\x89PNG"


@pytest.fixture
def indexed(tmp_path, run_cli):
    """An untrained 12-bit model, a folder whose first image's name holds a newline, and a
    flat index of the folder; returns (index, store, a query image, the odd image)."""
    from hashkit.bundle import Bundle

    config = NetworkConfig(bits=12, input_size=16, channels=3, mean=[0.5] * 3, std=[0.5] * 3)
    model = tmp_path / "model.pt"
    save_bundle(Bundle(config, HashNet(config).state_dict(), np.eye(12)), model)
    root = tmp_path / "images"
    write_class_images(root, classes=2, per_class=3)
    odd = root / "class0" / "line\nbreak.png"
    (root / "class0" / "000.png").rename(odd)
    index = tmp_path / "out.faiss"
    assert run_cli("build-index", root, index, "--model", model, "-q").exit_code == 0
    return index, tmp_path / "out.h5", root / "class1" / "001.png", odd


def test_search_json_is_one_array_of_the_same_records_for_images_and_codes(indexed, run_cli):
    index, store, query, odd = indexed
    keys = {"query_id", "query_path", "results"}
    hit_keys = {"rank", "id", "distance", "path"}
    one = json.loads(run_cli("search", index, query, "-k", "2", "--json").stdout)
    two = json.loads(run_cli("search", index, query, odd, "-k", "2", "--json").stdout)
    codes = json.loads(run_cli("search", index, "--codes", store, "-k", "2", "--json").stdout)
    assert [len(one), len(two), len(codes)] == [1, 2, 6]
    for record in one + two + codes:
        assert set(record) == keys and all(set(h) == hit_keys for h in record["results"])
    assert [r["query_id"] for r in two] == [0, 1]
    assert [r["query_path"] for r in two] == [str(query), str(odd)]
    assert str(odd) in [r["query_path"] for r in codes]  # a stored path, newline and all
    lines = run_cli("search", index, "--codes", store, "-k", "2", "--format", "jsonl").stdout
    assert [json.loads(line) for line in lines.splitlines()] == codes


@pytest.mark.parametrize("fmt", ["json", "csv", "jsonl", "text"])
def test_search_writes_nothing_to_stdout_when_a_query_store_is_bad_past_its_first_batch(
    tmp_path, indexed, run_cli, fmt
):
    """A bad row anywhere in the query store (here a padding bit set in row 10,002, past the
    first batch of 10,000) fails before the first result: no '[' or CSV header is left on
    stdout for a pipeline to read as a truncated result."""
    index = indexed[0]
    codes = np.zeros((10_003, 2), np.uint8)
    codes[10_002, 1] = 0x80
    with h5py.File(tmp_path / "q.h5", "w") as f:
        f["codes"] = codes
        f.attrs.update(bits=12, bit_order="little")
    result = run_cli("search", index, "--codes", tmp_path / "q.h5", "--format", fmt)
    assert_one_line_error(result, "q.h5")
    assert result.stdout == ""


def test_search_text_output_escapes_a_newline_in_a_path_and_csv_keeps_it(indexed, run_cli):
    index, store, _, odd = indexed
    text = run_cli("search", index, odd, "-k", "6").stdout.splitlines()
    assert len(text) == 1 + 6  # the query line and one line per hit
    assert text[0] == "# " + str(odd).replace("\n", "\\n")
    assert sum(line.endswith("line\\nbreak.png") for line in text[1:]) == 1
    rows = list(csv.reader(io.StringIO(run_cli("search", index, odd, "--format", "csv").stdout)))
    assert rows[1][1] == str(odd) and str(odd) in [row[5] for row in rows[1:]]


def test_log_lines_print_above_a_progress_bar_instead_of_after_it(monkeypatch):
    from tqdm import tqdm

    from hashkit.cli.progress import log_factory

    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    bar = tqdm(total=3, file=stream, desc="epoch 1/2", leave=False)
    bar.update(1)
    log_factory(quiet=False)("epoch 1/2  loss 0.5")
    bar.update(1)
    bar.close()
    # A terminal shows what follows the last carriage return of each line: the message alone,
    # not glued to the end of the bar.
    shown = [line.split("\r")[-1] for line in stream.getvalue().split("\n")]
    assert "epoch 1/2  loss 0.5" in shown
    assert log_factory(quiet=True)("nothing") is None
