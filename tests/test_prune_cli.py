"""``onnxprune prune``: bad plans are one-line errors (exit 2, nothing written); external data."""

from __future__ import annotations

import hashlib
import json
import warnings

import numpy as np
import onnx
import pytest
from archs import Builder, assert_close, export, head, random_feeds, run_ort, stem
from click.testing import CliRunner

from onnxprune.analysis.groups import analyze_channels
from onnxprune.analysis.summary import count_macs
from onnxprune.cli import main


@pytest.fixture
def small(tmp_path):
    b = Builder(0)
    y = stem(b, 6)
    g = b.op("LRN", [b.op("Relu", [b.conv(y, 6, 4)])], size=3)  # LRN blocks the conv before it
    m = b.model([head(b, b.op("Relu", [g]), 4)])
    path = tmp_path / "model.onnx"
    onnx.save(m, str(path))
    return path, analyze_channels(m)


def _hashes(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()
            if p.is_file()}


def _prune(*args):
    return CliRunner().invoke(main, ["prune", *map(str, args)])


def _bad(tmp_path, model, plan_text, *names):
    plan = tmp_path / "plan.json"
    plan.write_text(plan_text)
    before = _hashes(tmp_path)
    out = tmp_path / "out.onnx"
    result = _prune(model, "--plan", plan, "-o", out, "--masked-reference", tmp_path / "ref.onnx")
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("onnxprune: error:"), result.stderr
    assert "Traceback" not in result.output
    for name in names:
        assert name in lines[0]
    assert not out.exists() and not (tmp_path / "ref.onnx").exists()
    assert _hashes(tmp_path) == before
    return lines[0]


def test_prunable_groups(small):
    _, a = small
    # LRN sums over the conv's channels: a true barrier
    assert [(g.channels, g.prunable) for g in a.groups] == [(6, True), (4, False), (3, False)]


def test_unknown_group(tmp_path, small):
    _bad(tmp_path, small[0], json.dumps({"keep": {"nope": [0]}}), "'nope'", "unknown group")


@pytest.mark.parametrize("indices,what", [([0, 6], "out of range"), ([-1], "out of range"),
                                          ([1, 1], "twice"), ([], "zero channels"),
                                          (["a"], "integer"), ([0.5], "integer")])
def test_bad_indices(tmp_path, small, indices, what):
    gid = small[1].groups[0].id
    _bad(tmp_path, small[0], json.dumps({"keep": {gid: indices}}), f"'{gid}'", what)


def test_barrier_group(tmp_path, small):
    g = small[1].groups[1]
    message = _bad(tmp_path, small[0], json.dumps({"keep": {g.id: [0, 1]}}), f"'{g.id}'",
                   "not prunable")
    assert "LRN" in message and "normalizes across channels" in message


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", '{"keep": [1]}', '{"keep": 3}',
                                  '{"plan": {}}', "\xff\xfe"])
def test_malformed_plan(tmp_path, small, text):
    _bad(tmp_path, small[0], text, "plan")


def test_good_plan_writes_model_and_reference(tmp_path, small):
    path, a = small
    gid = a.groups[0].id
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"keep": {gid: [0, 2, 5]}}))
    out, ref = tmp_path / "out.onnx", tmp_path / "ref.onnx"
    result = CliRunner().invoke(main, ["prune", str(path), "--plan", str(plan), "-o", str(out),
                                       "--masked-reference", str(ref), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["macs_after"] < report["macs_before"]
    pruned = onnx.load(str(out))
    onnx.checker.check_model(pruned, full_check=True)
    assert count_macs(pruned) == report["macs_after"]
    feeds = random_feeds(pruned)
    assert_close(run_ort(out, feeds), run_ort(ref, feeds))


def test_external_data_in_and_out(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = export("vgg_small", tmp_path, dynamo=True)
    data = tmp_path / (path.name + ".data")
    assert data.is_file()
    from onnxprune.graph import load_model

    a = analyze_channels(load_model(path).model)
    rng = np.random.default_rng(0)
    keep = {g.id: sorted(rng.choice(g.channels, max(1, g.channels // 2), replace=False).tolist())
            for g in a.groups if g.prunable}
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"keep": keep}))
    before = _hashes(tmp_path)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out, ref = out_dir / "pruned.onnx", out_dir / "ref.onnx"
    result = _prune(path, "--plan", plan, "-o", out, "--masked-reference", ref)
    assert result.exit_code == 0, result.output
    for name in ("pruned.onnx", "ref.onnx"):
        proto = onnx.load(str(out_dir / name), load_external_data=False)
        assert any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer)
        assert (out_dir / (name + ".data")).is_file()
    for name, digest in before.items():
        assert hashlib.sha256((tmp_path / name).read_bytes()).hexdigest() == digest
    onnx.checker.check_model(str(out), full_check=True)
    feeds = random_feeds(onnx.load(str(out)))
    assert_close(run_ort(out, feeds), run_ort(ref, feeds))
