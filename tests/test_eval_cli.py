"""``hashkit eval`` on stores written by hashkit and by plain h5py."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from hashkit import metrics
from hashkit.cli.main import _registered, cli
from hashkit.codes import pack_codes
from hashkit.store import CodeStore, write_store


def codes_and_labels(seed, n, bits, multi=False):
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(0).integers(0, 2, (3, bits))
    classes = rng.integers(0, 3, n)
    codes = pack_codes(centres[classes] ^ (rng.random((n, bits)) < 0.2))
    labels = np.eye(3, dtype=np.uint8)[classes] if multi else classes.astype(np.int64)
    return codes, labels


def write_hashkit_store(path, seed, n, bits, multi=False):
    codes, labels = codes_and_labels(seed, n, bits, multi)
    write_store(path, CodeStore(codes=codes, ids=np.arange(n), bits=bits, labels=labels))
    return codes, labels


def write_plain_h5(path, codes, labels=None, bits=None):
    with h5py.File(path, "w") as f:
        f["codes"] = codes
        f.attrs["bit_order"] = "little"  # the codes come from pack_codes
        if labels is not None:
            f["labels"] = labels
        if bits is not None:
            f.attrs["bits"] = bits


def invoke(*args):
    _registered()
    return CliRunner().invoke(cli, ["eval", *map(str, args)])


def test_eval_json_has_the_documented_keys_and_the_library_values(tmp_path):
    q, lq = write_hashkit_store(tmp_path / "q.h5", 1, 20, 12)
    b, lb = write_hashkit_store(tmp_path / "b.h5", 2, 300, 12)
    result = invoke(tmp_path / "q.h5", tmp_path / "b.h5", "--top-k", 10, "--top-k", 50, "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["map"] == pytest.approx(metrics.mean_average_precision(q, b, lq, lb, 12))
    assert set(out["map_at"]) == {"10", "50"}
    assert out["map_at"]["10"] == pytest.approx(
        metrics.mean_average_precision(q, b, lq, lb, 12, 10)
    )
    assert out["tie_aware_map"] == pytest.approx(
        metrics.mean_average_precision(q, b, lq, lb, 12, tie_aware=True)
    )
    assert set(out["precision_at"]) == {"100", "500", "1000"}
    assert out["precision_radius2"] == pytest.approx(
        metrics.precision_within_radius(q, b, lq, lb, 12)
    )


def test_eval_reads_stores_written_with_plain_h5py_and_plots(tmp_path):
    q, lq = codes_and_labels(3, 15, 24, multi=True)
    b, lb = codes_and_labels(4, 200, 24, multi=True)
    write_plain_h5(tmp_path / "q.h5", q, lq, bits=24)
    write_plain_h5(tmp_path / "b.h5", b, lb, bits=24)
    result = invoke(tmp_path / "q.h5", tmp_path / "b.h5", "--plot", tmp_path / "plots")
    assert result.exit_code == 0, result.output
    assert "tie-aware mAP" in result.output and "P@r<=2" in result.output
    expected = metrics.mean_average_precision(q, b, lq, lb, 24)
    assert f"{expected:.4f}" in result.output
    for name in ("pr_curve.png", "precision_at_k.png"):
        assert (tmp_path / "plots" / name).read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    "make_query,make_database,message",
    [
        (lambda q, lq: (q, None, 12), lambda b, lb: (b, lb, 12), "no 'labels'"),
        (lambda q, lq: (q, lq, 12), lambda b, lb: (b[:, :1], lb, 8), "bits disagree"),
        (
            lambda q, lq: (q, np.ones((len(lq), 3), dtype=np.uint8), 12),
            lambda b, lb: (b, lb, 12),
            "are multi-hot (N x 3) but",
        ),
        (lambda q, lq: (q, lq.astype(float) + 0.5, 12), lambda b, lb: (b, lb, 12), "whole"),
        (lambda q, lq: (q, lq, 12), lambda b, lb: (b, np.full((50, 3), 0.5), 12), "0 or 1"),
        (lambda q, lq: (q[:0], lq[:0], 12), lambda b, lb: (b, lb, 12), "holds no codes"),
        (lambda q, lq: (q, lq, 20), lambda b, lb: (b, lb, 12), "bits=20"),
    ],
)
def test_eval_bad_input_gets_one_error_line(tmp_path, make_query, make_database, message):
    q, lq = codes_and_labels(5, 10, 12)
    b, lb = codes_and_labels(6, 50, 12)
    write_plain_h5(tmp_path / "q.h5", *make_query(q, lq))
    write_plain_h5(tmp_path / "b.h5", *make_database(b, lb))
    result = invoke(tmp_path / "q.h5", tmp_path / "b.h5")
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hashkit: error:"), result.output
    assert message in lines[0]


@pytest.mark.parametrize(
    "query_attrs,database_attrs,message",
    [
        ({"model_fingerprint": "a" * 64}, {"model_fingerprint": "b" * 64}, "different models"),
        ({"class_names": '["cat", "dog", "fox"]'}, {"class_names": '["dog", "cat", "fox"]'},
         "class names"),
    ],
)  # fmt: skip
def test_eval_refuses_stores_whose_codes_or_labels_mean_different_things(
    tmp_path, query_attrs, database_attrs, message
):
    """Codes of two models, or class numbers of two namings, make a number that means nothing:
    refused like ``search --codes`` refuses a query store of another model. The same stores
    with matching attributes (or one side unknown) are scored."""
    q, lq = codes_and_labels(5, 10, 12)
    b, lb = codes_and_labels(6, 50, 12)
    write_plain_h5(tmp_path / "q.h5", q, lq, bits=12)
    write_plain_h5(tmp_path / "b.h5", b, lb, bits=12)
    for path, attrs in ((tmp_path / "q.h5", query_attrs), (tmp_path / "b.h5", database_attrs)):
        with h5py.File(path, "a") as f:
            f.attrs.update(attrs)
    result = invoke(tmp_path / "q.h5", tmp_path / "b.h5")
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hashkit: error:"), result.output
    assert message in lines[0]
    with h5py.File(tmp_path / "b.h5", "a") as f:
        f.attrs.update(query_attrs)
    assert invoke(tmp_path / "q.h5", tmp_path / "b.h5").exit_code == 0
    with h5py.File(tmp_path / "b.h5", "a") as f:
        for key in query_attrs:
            del f.attrs[key]
    assert invoke(tmp_path / "q.h5", tmp_path / "b.h5").exit_code == 0


def test_eval_missing_file_is_one_error_line(tmp_path):
    result = invoke(tmp_path / "nope.h5", tmp_path / "nope2.h5")
    assert result.exit_code == 1
    assert "not found" in result.output


def test_eval_reads_n_x_1_labels_as_class_indices(tmp_path):
    q, lq = codes_and_labels(5, 20, 12)
    b, lb = codes_and_labels(6, 300, 12)
    write_plain_h5(tmp_path / "q.h5", q, lq[:, None], bits=12)
    write_plain_h5(tmp_path / "b.h5", b, lb[:, None], bits=12)
    result = invoke(tmp_path / "q.h5", tmp_path / "b.h5", "--json")
    assert result.exit_code == 0, result.output
    expected = metrics.mean_average_precision(q, b, lq, lb, 12)
    assert expected < 0.9
    assert json.loads(result.output)["map"] == pytest.approx(expected)


@pytest.mark.parametrize("k", [str(2**63), "0", "-5", "2.5"])
def test_eval_absurd_top_k_is_a_usage_error(tmp_path, k):
    write_hashkit_store(tmp_path / "q.h5", 1, 10, 12)
    write_hashkit_store(tmp_path / "b.h5", 2, 40, 12)
    result = invoke(tmp_path / "q.h5", tmp_path / "b.h5", "--top-k", k)
    assert result.exit_code == 2
    assert "Invalid value for '--top-k'" in result.output


def test_bench_absurd_top_k_is_a_usage_error_before_any_training():
    _registered()
    result = CliRunner().invoke(cli, ["bench", "--bits", "8", "--top-k", str(2**63)])
    assert result.exit_code == 2
    assert "Invalid value for '--top-k'" in result.output


def test_eval_compares_several_methods_in_json_and_on_one_figure(tmp_path):
    q1, lq1 = write_hashkit_store(tmp_path / "q1.h5", 1, 20, 12)
    b1, lb1 = write_hashkit_store(tmp_path / "b1.h5", 2, 300, 12)
    q2, lq2 = write_hashkit_store(tmp_path / "q2.h5", 3, 20, 32)
    b2, lb2 = write_hashkit_store(tmp_path / "b2.h5", 4, 300, 32)
    plots = tmp_path / "plots"
    result = invoke(
        tmp_path / "q1.h5", tmp_path / "b1.h5", "--name", "A",
        "--compare", "B", tmp_path / "q2.h5", tmp_path / "b2.h5", "--plot", plots, "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["map"] == pytest.approx(metrics.mean_average_precision(q1, b1, lq1, lb1, 12))
    assert out["compare"]["B"]["map"] == pytest.approx(
        metrics.mean_average_precision(q2, b2, lq2, lb2, 32)
    )
    for name in ("pr_curve.png", "precision_at_k.png"):
        assert (plots / name).read_bytes()[:4] == b"\x89PNG"
    text = invoke(
        tmp_path / "q1.h5", tmp_path / "b1.h5", "--compare", "B", tmp_path / "q2.h5",
        tmp_path / "b2.h5",
    )  # fmt: skip
    assert "== q1" in text.output and "== B" in text.output


def test_curve_plots_draw_one_labelled_line_per_method():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hashkit.plots import draw_pr_curves, draw_precision_curves

    results = []
    for seed, label in ((1, "A"), (2, "B"), (3, "C")):
        q, lq = codes_and_labels(seed, 10, 16)
        b, lb = codes_and_labels(seed + 10, 100, 16)
        results.append((label, metrics.evaluate_retrieval(q, b, lq, lb, 16)))
    fig, axes = plt.subplots(1, 2)
    draw_pr_curves(axes[0], results)
    draw_precision_curves(axes[1], results)
    for ax in axes:
        assert [line.get_label() for line in ax.lines] == ["A", "B", "C"]
        assert [t.get_text() for t in ax.get_legend().get_texts()] == ["A", "B", "C"]
    plt.close(fig)
