"""tools/bench_scale.py: phase spans from progress lines, RSS polling of a child, the JSON merge,
and the size of the VGG-style 320x320 classifier it builds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import onnx
import bench_scale  # tools/ is put on sys.path by conftest.py


def test_progress_lines_parse_and_unmatched_lines_do_not():
    line = bench_scale.LINE.match("gate training: 3/10 loss 2.456 task 0.000")
    assert (line["label"], line["done"], line["total"]) == ("gate training", "3", "10")
    line = bench_scale.LINE.match("recalibration: 1/54 /layer1/layer1.0/conv1/Conv")
    assert (line["label"], line["total"]) == ("recalibration", "54")
    assert bench_scale.LINE.match("onnxprune: warning: no --data given: running data-free") is None


def test_phases_are_the_spans_between_transitions_and_repeats_add_up():
    transitions = [(0.0, "startup"), (2.0, "gate training"), (5.0, "after gate training"),
                   (6.0, "recalibration"), (9.5, "after recalibration")]
    assert bench_scale.phases(transitions, 10.0) == {
        "startup": 2.0, "gate training": 3.0, "after gate training": 1.0,
        "recalibration": 3.5, "after recalibration": 0.5}
    again = [(0.0, "startup"), (1.0, "a"), (2.0, "b"), (4.0, "a")]
    assert bench_scale.phases(again, 5.0) == {"startup": 1.0, "a": 2.0, "b": 2.0}


def test_watch_tags_lines_and_rss_with_the_phase_of_a_real_child(tmp_path):
    script = (
        "import sys, time\n"
        "time.sleep(0.6)\n"
        "print('gate training: 1/2 loss 1', file=sys.stderr, flush=True)\n"
        "block = bytearray(64 * 2**20)\n"  # 64 MiB touched in the gate phase
        "time.sleep(0.8)\n"
        "print('gate training: 2/2 loss 0', file=sys.stderr, flush=True)\n"
        "del block\n"
        "time.sleep(0.6)\n")
    proc = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True)
    watch = bench_scale.Watch(proc, time.monotonic(), tmp_path / "log.txt")
    _, status, usage = os.wait4(proc.pid, 0)
    watch.finished = True
    watch.join()
    assert os.waitstatus_to_exitcode(status) == 0
    assert [label for _, label in watch.transitions] == [
        "startup", "gate training", "after gate training"]
    assert [e[1:] for e in watch.events] == [("gate training", 1, 2), ("gate training", 2, 2)]
    assert watch.rss["gate training"] > watch.rss["startup"] + 48 * 2**20
    assert usage.ru_maxrss * 1024 >= 64 * 2**20
    assert "gate training: 2/2" in (tmp_path / "log.txt").read_text()


def test_merge_replaces_rows_of_the_same_model_and_case_only(tmp_path):
    path = tmp_path / "scale.json"
    row = {"model": "m", "case": "datafree", "wall_s": 1.0}
    bench_scale.merge(path, [row, {"model": "m", "case": "folder", "wall_s": 2.0}], {"cpus": 2})
    bench_scale.merge(path, [dict(row, wall_s=3.0)], {"cpus": 2})
    bench_scale.merge(path, [dict(row, wall_s=9.0, smoke=True)], {"cpus": 2})
    bench_scale.merge(path, [dict(row, wall_s=4.0, tag="small")], {"cpus": 2})
    data = json.loads(path.read_text())
    got = sorted((r["case"], r.get("smoke", False), r.get("tag", ""), r["wall_s"])
                 for r in data["runs"])
    assert got == [("datafree", False, "", 3.0), ("datafree", False, "small", 4.0),
                   ("datafree", True, "", 9.0), ("folder", False, "", 2.0)]
    assert data["cpus"] == 2 and [p.name for p in tmp_path.iterdir()] == ["scale.json"]


def test_the_vgg_style_classifier_is_about_1_3_gmacs_at_320(tmp_path):
    from onnxprune.analysis.groups import analyze_channels

    path = bench_scale.build_model("vgg320", tmp_path)
    macs = analyze_channels(onnx.load(str(path))).macs()
    assert 1.2e9 < macs < 1.4e9


def test_the_table_renders_runs_of_the_chosen_tags_into_the_readme(tmp_path):
    runs = [{"model": "resnet50", "case": "folder", "tag": "new", "commit": "abc", "settings": {},
             "returncode": 0, "wall_s": 512.3, "timed_out": False, "phase_at_end": "x",
             "phase_s": {"refit scores": 300.0, "recalibration": 100.0, "startup": 5.0},
             "peak_rss_mb": 1500.0, "peak_tree_rss_mb": 1510.0, "mac_fraction": 0.4998,
             "load_before": [3.2]},
            {"model": "vgg320", "case": "datafree", "tag": "old", "commit": "def",
             "settings": {"iterations": 5}, "returncode": -9, "wall_s": 900.0, "timed_out": True,
             "phase_at_end": "recalibration", "phase_s": {}, "peak_rss_mb": 4000.0,
             "load_before": [20.0]}]
    data = tmp_path / "scale.json"
    data.write_text(json.dumps({"runs": runs}))
    readme = tmp_path / "README.md"
    readme.write_text(f"a\n{bench_scale.TABLE_START}\nstale\n{bench_scale.TABLE_END}\nb\n")
    assert bench_scale.main(["--table-from", str(data), "--tags", "new",
                             "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert "stale" not in text and text.startswith("a\n") and text.endswith("b\n")
    assert "| ResNet-50 224² | image folder | defaults | abc | 512 s | refit scores 300 s" in text
    assert "1.47 GiB | 0.500 | 3.2 |" in text and "VGG" not in text
    both = bench_scale.table(runs)
    assert "killed at 900 s in recalibration (time limit)" in both and "--iterations 5" in both
    runs[1].update(timed_out=False)
    assert "killed from outside at 900 s in recalibration" in bench_scale.table(runs)


def test_the_memory_table_renders_each_result(tmp_path):
    import bench_memory

    result = {"settings": {"model": "/tmp/m.onnx", "image_size": 224, "format": "jpg",
                           "preset": "imagenet", "calibration_samples": 512, "repeats": 1},
              "peak_rss_mib": {"1000": 1500.0, "20000": 1530.0},
              "ratio_largest_to_smallest": 1.02, "passed": True,
              "load_average": {"before": [4.5]}}
    path = tmp_path / "m.json"
    path.write_text(json.dumps(result))
    text = bench_memory.table([str(path)])
    assert ("| `m.onnx` | 224×224 jpg | preset imagenet, 512 calibration samples, 1 repeat(s) "
            "| 1,000 images: 1500 MiB, 20,000 images: 1530 MiB | 1.020 | yes | 4.5 |") in text
