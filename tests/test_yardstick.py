"""tools/bench_yardstick.py (with tools/yardstick_table.py, yardstick_peer.py) and
tools/fashion_mnist.py: statistics, verdict, README rewrite, IDX.

Never trains and never needs the Debian package: synthetic rows and a synthetic IDX file.
"""

from __future__ import annotations

import gzip
import math

import numpy as np
import pytest

import bench_yardstick as bench  # tools/ is put on sys.path by conftest.py
import fashion_mnist


def _row(method, acc, seed, recalibration="reconstruct", target=0.5, side="ours", **extra):
    return {"model": "vgg", "target": target, "method": method, "recalibration": recalibration,
            "seed": seed, "side": side, "accuracy_before": 91.0, "accuracy_after": acc,
            "macs_ratio": target * 0.99, "macs_ok": True, "seconds": 1.0, **extra}


def _grid(autobot, peer, baseline=80.0, target=0.5):
    rows = []
    for seed, (a, p) in enumerate(zip(autobot, peer)):
        for rc in bench.RECALIBRATIONS:
            rows.append(_row("autobot", a, seed, rc, target))
            rows += [_row(m, baseline, seed, rc, target) for m in bench.BASELINES]
        rows.append(_row("peer-l2", p, seed, "none", target, side="peer", reachable=True))
        rows.append(_row("peer-wanda", p - 5, seed, "bias", target, side="peer", reachable=True))
    return rows


def _failed(rows, n_eval=10000, default="autobot/reconstruct"):
    verdict = bench.acceptance(rows, n_eval, default)
    return sorted(c["check"] for c in verdict["checks"] if not c["ok"])


def test_standard_error_combines_seed_spread_and_sampling():
    rows = [_row("autobot", a, s) for s, a in enumerate([90.0, 91.0, 92.0])]
    (mean,) = bench.mean_rows(rows, 10000)
    assert mean["accuracy_after"] == pytest.approx(91.0)
    expected = math.sqrt(1.0 / 3 + 0.91 * 0.09 / 10000 * 1e4)
    assert mean["se"] == pytest.approx(expected)


def test_the_peer_must_be_beaten_by_more_than_two_standard_errors():
    # the binomial se alone is ~0.29 points at 10k images: a 0.5-point win is not enough
    assert "default beats the peer's best by > 2 se" in _failed(
        _grid([90.5] * 3, [90.0] * 3))
    assert _failed(_grid([90.5] * 3, [80.0] * 3)) == []


def test_the_half_target_must_stay_within_two_points_and_baselines_are_per_mode():
    assert _failed(_grid([88.9] * 3, [50.0] * 3)) == ["default within 2 points of unpruned"]
    rows = _grid([90.5] * 3, [50.0] * 3)
    for row in rows:
        if row["method"] == "random" and row["recalibration"] == "stats":
            row["accuracy_after"] = 95.0
    assert _failed(rows) == ["autobot beats random (stats)"]


def test_an_unreachable_peer_budget_is_a_win_and_is_labelled():
    rows = _grid([90.5] * 2, [90.4] * 2, target=0.25)
    for row in rows:
        if row["side"] == "peer":
            row["reachable"] = False
    assert _failed(rows) == []
    assert "budget not reached" in bench.summary_table(rows, 10000, "autobot/reconstruct")


def test_summary_table_has_one_line_per_model_and_target():
    rows = _grid([90.5, 90.7], [60.0, 61.0]) + _grid([85.0, 86.0], [30.0, 30.0], target=0.25)
    lines = bench.summary_table(rows, 10000, "autobot/reconstruct").splitlines()
    assert len(lines) == 4
    assert lines[2].startswith("| vgg (91.00) | 0.5 | 0,1 | 90.60 ± ")
    assert "peer-l2 none" not in lines[2] and "60.50 (none) / 55.50 (bias)" in lines[2]


def test_readme_rewrite_touches_only_the_marked_text(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("before\n<!-- yardstick-table -->\nold\n<!-- /yardstick-table -->\nafter\n")
    assert bench.rewrite_readme(readme, "new table\n")
    assert readme.read_text() == ("before\n<!-- yardstick-table -->\nnew table\n"
                                  "<!-- /yardstick-table -->\nafter\n")
    plain = tmp_path / "plain.md"
    plain.write_text("no markers\n")
    assert not bench.rewrite_readme(plain, "x")
    assert plain.read_text() == "no markers\n"


def _write_idx(path, array, gz):
    header = bytes([0, 0, 8, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    opener = gzip.open if gz else open
    with opener(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


@pytest.mark.parametrize("gz", [True, False])
def test_idx_reader_and_split(tmp_path, gz):
    rng = np.random.default_rng(0)
    suffix = ".gz" if gz else ""
    for kind, n in (("train", 600), ("t10k", 100)):
        _write_idx(tmp_path / f"{kind}-images-idx3-ubyte{suffix}",
                   rng.integers(0, 256, (n, 28, 28)), gz)
        _write_idx(tmp_path / f"{kind}-labels-idx1-ubyte{suffix}", np.arange(n) % 10, gz)
    pixels, labels = fashion_mnist.load_raw("train", tmp_path)
    assert pixels.shape == (600, 28, 28) and labels.dtype == np.int64
    train, val = fashion_mnist.split_indices(labels, val_per_class=5)
    assert len(val) == 50 and len(train) == 550 and not set(train) & set(val)
    assert np.bincount(labels[val]).tolist() == [5] * 10
    np.testing.assert_array_equal(val, fashion_mnist.split_indices(labels, val_per_class=5)[1])
    x = fashion_mnist.preprocess(pixels[:3])
    assert x.shape == (3, 1, 28, 28) and x.dtype == np.float32


def test_missing_dataset_says_how_to_install(tmp_path):
    with pytest.raises(fashion_mnist.FashionMNISTMissing, match="apt-get install -y "
                                                               "dataset-fashion-mnist"):
        fashion_mnist.load_raw("train", tmp_path)


def test_merge_combines_runs_on_different_models(tmp_path):
    def result(model, seconds):
        rows = [{**r, "model": model} for r in _grid([90.5] * 2, [50.0] * 2)]
        return {"machine": {"cpu": "x", "cores": 2}, "versions": {}, "peer_version": "v0.8.1",
                "settings": {"n_eval": 10000, "models": [model], "seeds": [0, 1],
                             "targets": [0.5], "split": "test", "embedded_subsets": False,
                             "round_to": "auto", "iterations": 200, "threads": 1,
                             "train_data": "55,000-image training split",
                             "command": f"python tools/bench_yardstick.py --models {model}"},
                "rows": rows, "total_seconds": seconds}
    files = []
    for model in ("vgg", "resnet"):
        files.append(tmp_path / f"{model}.json")
        files[-1].write_text(bench.json.dumps(result(model, 10.0)))
    out = tmp_path / "all.json"
    assert bench.main(["--merge", *map(str, files), "--json", str(out), "--default",
                       "autobot/reconstruct"]) == 0
    merged = bench.json.loads(out.read_text())
    assert merged["settings"]["models"] == ["vgg", "resnet"]
    assert merged["total_seconds"] == 20.0 and merged["acceptance"]["ok"]
    assert len(bench.summary_table(merged["rows"], 10000, "autobot/reconstruct").splitlines()) == 4
    assert bench.main(["--merge", str(files[0]), "--default", "refit/nope"]) == 2


def test_another_default_is_checked_against_every_other_method_of_ours():
    rows = _grid([90.5] * 3, [50.0] * 3)  # autobot 90.5 under both recalibrations
    rows += [_row("refit", 91.0 if rc == "reconstruct" else 85.0, s, rc)
             for s in range(3) for rc in bench.RECALIBRATIONS]
    verdict = bench.acceptance(rows, 10000, ("refit", "reconstruct"))
    checks = {c["check"]: c["ok"] for c in verdict["checks"]}
    assert checks["refit beats autobot (reconstruct)"] is True
    assert checks["refit beats autobot (stats)"] is False
    assert checks["refit beats random (reconstruct)"] is True
    kinds = {c["check"]: c.get("kind") for c in verdict["checks"]}
    assert kinds["refit beats autobot (stats)"] == "candidate"  # chosen on validation
    assert kinds["refit beats random (stats)"] == "baseline"
    assert verdict["default"] == "refit/reconstruct" and verdict["ok"]  # baselines all beaten
    result = {"settings": {"split": "test", "n_eval": 10000, "embedded_subsets": False,
                           "round_to": "auto", "iterations": 200, "train_data": "t",
                           "threads": 1, "command": "c", "default": "refit/reconstruct"},
              "machine": {"cpu": "x", "cores": 2}, "total_seconds": 1.0, "rows": rows,
              "acceptance": verdict}
    text = bench.readme_text(result)
    assert "PASS" in text and "Not required" in text
    assert "vgg 0.5: refit beats autobot (stats) (85.00 vs 90.50)" in text
    rows = [r for r in rows if not (r["method"] == "random" and r["recalibration"] == "stats")]
    rows += [_row("random", 86.0, s, "stats") for s in range(3)]
    verdict = bench.acceptance(rows, 10000, ("refit", "reconstruct"))
    assert not verdict["ok"]  # a baseline ahead of the default fails
    text = bench.readme_text(dict(result, rows=rows, acceptance=verdict))
    assert "FAIL (1 of" in text and "vgg 0.5: refit beats random (stats) (85.00 vs 86.00)" in text
    assert verdict["headline"] == "refit/reconstruct"
    head = bench.summary_table(rows, 10000, ("refit", "reconstruct")).splitlines()[0]
    assert head.index("refit (reconstruct)") < head.index("autobot (reconstruct)")
    assert "refit s" in head


def test_rows_measured_through_the_steps_are_named_in_the_readme_text():
    rows = [_row("autobot", 90.0, 0), _row("refit", 91.0, 0, via="steps")]
    assert "Rows of refit" in bench._steps_note(rows)
    assert bench._steps_note([_row("autobot", 90.0, 0)]) == ""


def _auto_grid(refit_stats=70.0):
    rows = _grid([89.0] * 3, [50.0] * 3)  # autobot 89.0 under both recalibrations
    rows += [_row("refit", 90.5 if rc == "reconstruct" else refit_stats, s, rc)
             for s in range(3) for rc in bench.RECALIBRATIONS]
    return rows


def test_auto_is_judged_as_compress_resolves_it_per_recalibration():
    from onnxprune.pipeline import CompressConfig, resolve_method

    per_mode, headline = bench.resolve_defaults("auto")
    for rc, method in per_mode.items():  # the pipeline's own rule, with --data
        assert method == resolve_method(CompressConfig(model="m", output="o", data="d",
                                                       recalibration=rc))
    assert headline == (per_mode["reconstruct"], "reconstruct")
    assert per_mode == {"reconstruct": "refit", "stats": "autobot"}
    verdict = bench.acceptance(_auto_grid(), 10000, "auto")
    checks = {c["check"]: c["ok"] for c in verdict["checks"]}
    assert checks["refit beats autobot (reconstruct)"] and checks["autobot beats refit (stats)"]
    assert not any(c.startswith("refit beats") and c.endswith("(stats)") for c in checks)
    assert verdict["ok"] and verdict["headline"] == "refit/reconstruct"
    assert "autobot under stats" in verdict["default"]
    # refit+stats far behind would fail the old refit/reconstruct verdict, not auto's
    assert not bench.acceptance(_auto_grid(), 10000, "refit/reconstruct")["ok"]
    head = bench.summary_table(_auto_grid(), 10000, "auto").splitlines()[0]
    assert head.index("refit (reconstruct)") < head.index("autobot (reconstruct)")
    assert "refit (stats)" in head and "refit s" in head


def test_a_default_cell_that_was_not_measured_fails():
    rows = [r for r in _auto_grid() if not (r["method"] == "autobot"
                                             and r["recalibration"] == "stats")]
    failed = _failed(rows, default="auto")
    assert failed == ["default autobot (stats) measured"]


def test_a_cell_on_other_seeds_than_the_default_says_which():
    rows = [r for r in _auto_grid() if not (r["method"] == "random" and r["seed"] == 2)]
    line = bench.summary_table(rows, 10000, "auto").splitlines()[2]
    assert line.startswith("| vgg (91.00) | 0.5 | 0,1,2 | 90.50 ± ")
    assert line.count("[seeds 0,1]") == 2  # random under both recalibrations


def test_refit_settings_reach_compress_only_where_given():
    import argparse

    assert bench.refit_settings(argparse.Namespace(refit_rounds=None, refit_weighting=None)) == {}
    given = argparse.Namespace(refit_rounds="10", refit_weighting="fisher")
    assert bench.refit_settings(given) == {"refit_rounds": 10, "refit_weighting": "fisher"}
    assert bench.refit_rounds(argparse.Namespace(refit_rounds="auto")) == "auto"
    from onnxprune.gates.config import REFIT_ROUNDS

    assert bench.refit_rounds(argparse.Namespace(refit_rounds=None)) == REFIT_ROUNDS
