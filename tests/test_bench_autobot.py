"""tools/bench_autobot.py's verdict: means over seeds, every baseline, the 0.5 bar, MAC bounds."""

from __future__ import annotations

import bench_autobot  # tools/ is put on sys.path by conftest.py


def _row(method, after, seed, target=0.5, mode="labels", macs_ok=True):
    return {"model": "vgg", "target": target, "method": method, "mode": mode, "seed": seed,
            "accuracy_before": 99.0, "accuracy_after": after, "macs_ratio": target * 0.999,
            "macs_ok": macs_ok, "seconds": 1.0}


def _rows(autobot, random, macs_ok=True, mode="labels"):
    rows = []
    for seed, (a, r) in enumerate(zip(autobot, random)):
        rows += [_row("autobot", a, seed, mode=mode, macs_ok=macs_ok),
                 _row("random", r, seed, mode=mode), _row("l1", 90.0, seed, mode=mode),
                 _row("bn-scale", 90.0, seed, mode=mode)]
    return rows


def _failed(rows):
    verdict = bench_autobot.acceptance(rows, [0.5])
    return verdict["ok"], sorted(c["check"] for c in verdict["checks"] if not c["ok"])


def test_the_mean_over_seeds_decides_not_one_seed():
    # AutoBot loses seed 0 but wins on the mean
    assert _failed(_rows([98.0, 98.9, 98.9], [98.5, 98.0, 98.0])) == (True, [])
    # AutoBot wins seed 0 but loses on the mean
    assert _failed(_rows([98.6, 97.8, 97.8], [98.5, 98.4, 98.4])) == (False, ["beats random"])


def test_the_half_target_must_stay_within_one_and_a_half_points():
    assert _failed(_rows([97.4, 97.5, 97.5], [90.0] * 3)) == (
        False, ["within 1.5 points of unpruned"])
    assert _failed(_rows([97.5, 97.5, 97.5], [90.0] * 3)) == (True, [])


def test_a_single_run_off_its_mac_target_fails_the_verdict():
    rows = _rows([99.0] * 2, [90.0] * 2)
    rows[0]["macs_ok"] = False
    ok, failed = _failed(rows)
    assert not ok and failed == ["MACs within 0.5% under target (autobot labels seed 0)"]
    assert "(!)" in bench_autobot.table(rows)


def test_the_summary_table_shows_seed_means():
    rows = _rows([98.0, 99.0], [97.0, 98.0]) + _rows([95.0, 96.0], [80.0, 81.0], mode="stats")
    line = bench_autobot.summary_table(rows).splitlines()[2]
    assert line.startswith("| vgg (99.0) | 0.5 | 98.50 | 90.00 | 90.00 | 97.50 | - | - / - | "
                           "95.50 / 90.00 / 80.50 |")


def test_each_recalibration_is_judged_on_its_own():
    # reconstruct: AutoBot loses to random; stats: AutoBot wins but misses the 0.5 bar
    rows = _rows([98.0] * 2, [98.5] * 2) + _rows([96.0] * 2, [80.0] * 2, mode="stats")
    verdict = bench_autobot.acceptance(rows, [0.5])
    assert verdict["by_recalibration"] == {"reconstruct": False, "stats": False}
    assert not verdict["ok"]
    failed = sorted((c["recalibration"], c["check"]) for c in verdict["checks"] if not c["ok"])
    assert failed == [("reconstruct", "beats random"), ("stats", "within 1.5 points of unpruned")]
    # one setting passing everything passes the verdict, and says which
    rows = _rows([98.0] * 2, [98.5] * 2) + _rows([98.0] * 2, [80.0] * 2, mode="stats")
    verdict = bench_autobot.acceptance(rows, [0.5])
    assert verdict["ok"] and verdict["by_recalibration"] == {"reconstruct": False, "stats": True}


def test_dataset_fashion_hands_over_to_the_yardstick(monkeypatch):
    import bench_yardstick

    seen = []
    monkeypatch.setattr(bench_yardstick, "main", lambda argv: seen.append(argv) or 0)
    assert bench_autobot.main(["--dataset", "fashion", "--seeds", "0"]) == 0
    assert bench_autobot.main(["--seeds", "0", "--dataset=fashion"]) == 0
    assert seen == [["--seeds", "0"], ["--seeds", "0"]]
    assert bench_autobot.main(["--dataset", "cifar"]) == 2
