"""Conv and ConvTranspose rules: sources, depthwise coupling, grouped convs."""

from __future__ import annotations

import numpy as np
import pytest
from archs import Builder, check_random_plans, head, stem

from onnxprune.analysis.groups import analyze_channels


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("k", [1, 3])
def test_conv_chain(bias, k):
    b = Builder(1)
    y = stem(b, 6)
    y = b.op("Relu", [b.bn(b.conv(y, 6, 5, k=k, bias=bias), 5)])
    y = b.conv(y, 5, 7, k=k, bias=bias, stride=2)
    m = b.model([head(b, y, 7)])
    a = check_random_plans(m, plans=4, seed=k)
    assert [g.channels for g in a.groups] == [6, 5, 7, 3]
    assert [g.prunable for g in a.groups] == [True, True, True, False]
    # one global index per channel, consecutive
    assert [g.offset for g in a.groups] == [0, 6, 11, 18]


def test_depthwise_couples_input_and_output():
    b = Builder(2)
    y = stem(b, 6)
    dw = b.op("Relu", [b.bn(b.conv(y, 6, 6, group=6), 6)])
    m = b.model([head(b, dw, 6)])
    a = check_random_plans(m, plans=5)
    # the depthwise conv is not a source: its output carries the stem's channels
    assert [g.channels for g in a.groups] == [6, 3] and a.groups[0].prunable
    reads = [r for r in a.reads if r.node == m.graph.node[-1].name]
    assert len(reads) == 1 and a.channels(reads[0].ids).tolist() == list(range(6))
    depthwise = [mem for mem in a.members if mem.node == m.graph.node[2].name]
    assert {mem.index for mem in depthwise} == {1, 2}  # weight and bias sliced on axis 0
    assert all(a.channels(mem.ids).tolist() == list(range(6)) for mem in depthwise)


def test_depthwise_with_multiplier_drops_whole_groups():
    b = Builder(3)
    y = stem(b, 4)
    y = b.conv(y, 4, 8, group=4)  # channel multiplier 2: one input channel per group
    m = b.model([head(b, b.op("Relu", [y]), 8)])
    a = check_random_plans(m, plans=4)
    # the grouped conv is no source: each stem channel carries its group's two outputs
    assert [g.channels for g in a.groups] == [4, 3] and a.groups[0].prunable
    read = next(r for r in a.reads if r.node == m.graph.node[-1].name)
    assert a.channels(read.ids).tolist() == [0, 0, 1, 1, 2, 2, 3, 3]


@pytest.mark.parametrize("group", [2, 3])
def test_grouped_conv_prunes_the_same_channels_in_every_group(group):
    b = Builder(4)
    y = stem(b, 6)
    g = b.conv(y, 6, 12, group=group)
    m = b.model([head(b, b.op("Relu", [g]), 12)])
    a = check_random_plans(m, plans=4, seed=group)
    # input position i of every group is one channel, and so is output position j
    assert [g.channels for g in a.groups] == [6 // group, 12 // group, 3]
    assert all(g.prunable for g in a.groups[:2])
    read = next(r for r in a.reads if r.node == m.graph.node[-1].name)
    assert a.channels(read.ids).tolist() == list(range(6 // group, 6 // group + 12 // group)) \
        * group


def test_channel_shuffle_between_grouped_convs():
    """ShuffleNet: grouped 1x1 conv -> Reshape (N, g, c/g, H, W) -> Transpose -> Reshape ->
    depthwise -> grouped 1x1 conv, with a residual Add; equal to its masked reference."""
    b = Builder(6)
    groups, c = 2, 8
    x = stem(b, c)
    y = b.op("Relu", [b.conv(x, c, c, k=1, group=groups)])
    y = b.op("Reshape", [y, b.const_i64([1, groups, c // groups, 4, 4])])
    y = b.op("Transpose", [y], perm=[0, 2, 1, 3, 4])
    y = b.op("Reshape", [y, b.const_i64([1, c, 4, 4])])
    y = b.conv(y, c, c, group=c)
    y = b.conv(y, c, c, k=1, group=groups)
    m = b.model([head(b, b.op("Relu", [b.op("Add", [x, y])]), c)])
    a = check_random_plans(m, plans=5)
    assert a.prunable_macs() > 0.5 * a.macs()


def test_conv_transpose():
    b = Builder(5)
    y = stem(b, 6)
    w = b.weight(6, 4, 2, 2)
    bias = b.init(np.linspace(-1, 1, 4).astype(np.float32), "b")
    t = b.op("ConvTranspose", [y, w, bias], kernel_shape=[2, 2], strides=[2, 2])
    m = b.model([head(b, b.op("Relu", [t]), 4)])
    a = check_random_plans(m, plans=4)
    assert [g.channels for g in a.groups][:2] == [6, 4]
    assert all(g.prunable for g in a.groups[:2])


def test_grouped_conv_transpose_is_barrier():
    b = Builder(6)
    y = stem(b, 4)
    t = b.op("ConvTranspose", [y, b.weight(4, 1, 2, 2)], kernel_shape=[2, 2], strides=[2, 2],
             group=4)
    m = b.model([head(b, t, 4)])
    a = analyze_channels(m)
    assert not a.groups[0].prunable and "grouped ConvTranspose" in a.groups[0].reason
    check_random_plans(m, plans=2)


def test_conv_with_run_time_weight_is_barrier():
    b = Builder(7)
    y = stem(b, 4)
    scale = b.op("ReduceMean", ["x"], keepdims=0)  # a scalar computed from the input
    w = b.op("Mul", [b.weight(5, 4, 1, 1), scale])  # a weight computed at run time
    c = b.op("Conv", [y, w], kernel_shape=[1, 1])
    m = b.model([head(b, c, 5)])
    a = analyze_channels(m)
    assert not a.groups[0].prunable and "not constant" in a.groups[0].reason
    check_random_plans(m, plans=2)


def test_conv_with_constant_computed_weight_is_folded():
    """A weight computed by a constant subgraph (Neg of an initializer) is folded and pruned."""
    b = Builder(7)
    y = stem(b, 4)
    w = b.op("Neg", [b.weight(5, 4, 1, 1)])
    c = b.op("Conv", [y, w], kernel_shape=[1, 1])
    m = b.model([head(b, c, 5)])
    a = analyze_channels(m)
    assert all(g.prunable for g in a.groups[:2]) and w in a.folded
    check_random_plans(m, plans=2)


def test_shared_weight_initializer_is_cloned():
    """Two convs sharing one weight initializer: each is sliced on its own."""
    b = Builder(8)
    x = b.input("x", [1, 3, 4, 4])
    w = b.weight(4, 3, 3, 3)
    c1 = b.op("Conv", [x, w], kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    c2 = b.op("Conv", [x, w], kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    out = b.op("Concat", [head(b, c1, 4), head(b, c2, 4)], axis=1)
    m = b.model([out])
    a = check_random_plans(m, plans=4)
    assert [g.channels for g in a.groups][:2] == [4, 4]


def test_weights_shared_through_identity_nodes():
    """TorchScript dedups equal initializers behind Identity nodes (ResNet biases): followed."""
    b = Builder(9)
    x = b.input("x", [1, 3, 4, 4])
    bias = b.init(np.zeros(4, np.float32), "b")
    w = b.weight(4, 4, 1, 1)
    y = b.op("Relu", [b.op("Conv", [x, b.weight(4, 3, 3, 3), b.op("Identity", [bias])],
                           kernel_shape=[3, 3], pads=[1, 1, 1, 1])])
    z = b.op("Relu", [b.op("Conv", [y, b.op("Identity", [w]), b.op("Identity", [bias])],
                           kernel_shape=[1, 1])])
    z = b.op("Conv", [z, b.op("Identity", [w]), b.op("Identity", [bias])], kernel_shape=[1, 1])
    m = b.model([head(b, b.op("Add", [y, z]), 4)])
    a = check_random_plans(m, plans=5)
    assert [(g.channels, g.prunable) for g in a.groups] == [(4, True), (4, True), (3, False)]
    assert len(a.groups[0].sources) == 2 and not a.barriers
