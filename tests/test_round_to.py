"""``round_to``: kept channels per group come in blocks of N (select, prune_model, the CLI).

Semantics (``onnxprune.select._units``): a prunable group of C channels is cut, in score order,
into blocks of ``round_to``; a short tail rides with the last full block. The first block is
mandatory. So a group keeps C when C <= round_to, else a multiple of round_to that is at least
round_to, or all C (the last block, tail included, is only taken after the ones before it).
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from archs import Builder
from click.testing import CliRunner

from onnxprune.analysis.groups import analyze_channels
from onnxprune.analysis.summary import count_macs
from onnxprune.cli import main
from onnxprune.errors import OnnxPruneError
from onnxprune.scores import baseline_scores
from onnxprune.select import select
from onnxprune.surgery import prune_model


def allowed_counts(channels: int, round_to: int) -> set[int]:
    """The kept counts ``select`` may give a group of ``channels`` with ``round_to``."""
    if channels <= round_to:
        return {channels}
    full = channels // round_to
    counts = {round_to * j for j in range(1, full)}
    counts.add(channels)  # the last block (with any short tail) completes the group
    return counts


def test_allowed_counts_helper():
    assert allowed_counts(6, 8) == {6}
    assert allowed_counts(8, 8) == {8}
    assert allowed_counts(20, 8) == {8, 20}          # blocks 8 | 12 (tail 4 rides along)
    assert allowed_counts(36, 8) == {8, 16, 24, 36}  # blocks 8 | 8 | 8 | 12
    assert allowed_counts(32, 8) == {8, 16, 24, 32}


def _model(channels=(6, 20, 36, 16), batch="N", hw=8) -> onnx.ModelProto:
    """Conv chain 3 -> c0 -> c1 -> c2 -> c3 with a residual (c3 + conv(c3)), then a 1x1 head
    to 3 channels (the graph output, not prunable). Dynamic batch axis ``N``."""
    b = Builder(0)
    y = b.input("x", [batch, 3, hw, hw])
    cin = 3
    for i, c in enumerate(channels):
        y = b.op("Relu", [b.conv(y, cin, c, k=3 if i < 3 else 1)])
        cin = c
    r = b.op("Relu", [b.op("Add", [y, b.conv(y, cin, cin, k=3)])])
    out = b.conv(r, cin, 3, k=1)
    return b.model([out])


def _conv_out_channels(model: onnx.ModelProto) -> dict[str, int]:
    """Conv output tensor name -> its number of output channels (weight dim 0)."""
    inits = {t.name: t for t in model.graph.initializer}
    return {n.output[0]: int(inits[n.input[1]].dims[0]) for n in model.graph.node if n.op_type == "Conv"}


@pytest.fixture(scope="module")
def small():
    model = _model()
    return model, analyze_channels(model)


@pytest.mark.parametrize("method", ["l1", "random"])
@pytest.mark.parametrize("target", [0.3, 0.5, 0.75])
def test_select_round_to_8(small, method, target):
    model, analysis = small
    scores, _ = baseline_scores(method, analysis)
    sel = select(analysis, scores, target, round_to=8)
    before = count_macs(model)
    assert sel.macs_before == before
    assert sel.macs <= target * before + 1e-6
    kept = {g.id: int(sel.keep[g.offset:g.offset + g.channels].sum()) for g in analysis.groups}
    prunable = [g for g in analysis.groups if g.prunable]
    assert {g.channels for g in prunable} >= {6, 20, 36, 16}  # the test covers each case
    for g in analysis.groups:
        if not g.prunable:
            assert kept[g.id] == g.channels
            continue
        assert kept[g.id] in allowed_counts(g.channels, 8), (g.id, g.channels, kept[g.id])
    assert any(kept[g.id] < g.channels for g in prunable)
    # the pruned graph has exactly those channel counts, and the MACs the selection promised
    pruned = prune_model(model, sel.plan(analysis))
    assert count_macs(pruned) == sel.macs
    convs = _conv_out_channels(pruned)
    for g in prunable:
        for source in g.sources:
            assert convs[source] == kept[g.id], (source, convs[source], kept[g.id])
    for name, c in convs.items():
        assert c % 8 == 0 or c in (6, 20, 36, 3), (name, c)


def test_round_to_1_keeps_any_count(small):
    model, analysis = small
    scores, _ = baseline_scores("l1", analysis)
    for round_to in (1, 8):
        sel = select(analysis, scores, 0.5, round_to=round_to)
        assert sel.macs <= 0.5 * sel.macs_before + 1e-6
        counts = [int(sel.keep[g.offset:g.offset + g.channels].sum())
                  for g in analysis.groups if g.prunable]
        assert min(counts) >= min(round_to, min(g.channels for g in analysis.groups if g.prunable))


def test_groups_smaller_than_round_to_are_kept_whole(small):
    model, analysis = small
    scores, _ = baseline_scores("l1", analysis)
    # every group has <= 64 channels: round_to=64 keeps everything, so any target < 1 is unreachable
    with pytest.raises(OnnxPruneError, match="round-to"):
        select(analysis, scores, 0.9, round_to=64)
    full = select(analysis, scores, 1.0, round_to=64)
    assert full.keep.all() and full.plan(analysis) == {}


def test_cli_compress_round_to_8(tmp_path):
    model = _model(channels=(16, 24, 32, 16))
    path = tmp_path / "tiny.onnx"
    onnx.save(model, str(path))
    rng = np.random.default_rng(0)
    data = tmp_path / "d.npz"
    np.savez(data, x=rng.standard_normal((16, 3, 8, 8)).astype(np.float32),
             y=rng.integers(0, 3, 16).astype(np.int64))
    out = tmp_path / "out.onnx"
    result = CliRunner().invoke(main, ["compress", str(path), "--method", "l1", "--round-to", "8",
                                       "--target", "0.5", "--data", str(data), "-o", str(out),
                                       "--quiet"])
    assert result.exit_code == 0, result.output
    pruned = onnx.load(str(out))
    onnx.checker.check_model(pruned, full_check=True)
    graph_outputs = {o.name for o in pruned.graph.output}
    before, after = _conv_out_channels(model), _conv_out_channels(pruned)
    hidden = {name: c for name, c in after.items() if name not in graph_outputs}
    assert hidden and all(c % 8 == 0 for c in hidden.values()), hidden
    assert any(after[name] < before[name] for name in hidden), (before, after)
    assert count_macs(pruned) <= 0.5 * count_macs(model)
