"""Builds the hostile-input corpus in a temporary folder at test time (nothing binary is committed).

``build_corpus(root)`` returns ``(fixtures, cases)``: good fixtures (a small CNN, a plan, data)
and one ``Case`` per bad or unusual input. ``Case.kind`` says what it replaces in a command line:
``model`` (bad model file), ``plan`` (bad plan file), ``data`` (bad data file) or ``valid`` (a
valid model we may not be able to prune: it must either work, exit 0, or be refused with exit 2
naming the construct).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

IR_VERSION = 10  # what onnxruntime reads; onnx 1.23's helper would write a newer one
OPSET = 17
CLASSES = 5
CHANNELS = 8
SIZE = 8


@dataclass
class Case:
    name: str
    kind: str  # "model" | "plan" | "data" | "valid"
    path: Path
    words: tuple[str, ...] = ()  # lower-case words the one-line error must contain (bad inputs)
    construct: tuple[str, ...] = ()  # valid models: any of these must be named when refused
    skip: str | None = None
    commands: tuple[str, ...] | None = None  # only these subcommands (None: all that apply)
    extra_files: list[Path] = field(default_factory=list)


@dataclass
class Fixtures:
    model: Path
    plan: Path
    data: Path
    group: str  # a prunable group id of the good model


# --- models ---------------------------------------------------------------------------------------


def _weights(seed: int = 0, dtype=np.float32) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "w1": rng.standard_normal((CHANNELS, 3, 3, 3)).astype(dtype) * 0.3,
        "b1": rng.standard_normal(CHANNELS).astype(dtype) * 0.1,
        "w2": rng.standard_normal((CHANNELS, CHANNELS, 3, 3)).astype(dtype) * 0.2,
        "b2": rng.standard_normal(CHANNELS).astype(dtype) * 0.1,
        "fc_w": rng.standard_normal((CLASSES, CHANNELS)).astype(dtype) * 0.3,
        "fc_b": rng.standard_normal(CLASSES).astype(dtype) * 0.1,
    }


def cnn(
    weights: dict[str, np.ndarray] | None = None,
    middle: list[onnx.NodeProto] | None = None,
    middle_out: str = "r1",
    elem: int = TensorProto.FLOAT,
    opset: int = OPSET,
    ir_version: int | None = IR_VERSION,
    batch: int | str = "N",
    spatial: int | str = SIZE,
    const_weights: bool = False,
    extra_opsets: tuple[tuple[str, int], ...] = (),
    extra_inits: list[onnx.TensorProto] | None = None,
) -> onnx.ModelProto:
    """conv1 -> Relu -> [middle] -> conv2 -> Relu -> GlobalAveragePool -> Flatten -> Gemm."""
    w = weights if weights is not None else _weights()
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        *(middle or []),
        helper.make_node("Conv", [middle_out, "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], name="conv2"),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("GlobalAveragePool", ["r2"], ["p"], name="gap"),
        helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["logits"], transB=1, name="fc"),
    ]
    inits = [numpy_helper.from_array(v, k) for k, v in w.items()]
    if const_weights:
        consts = [helper.make_node("Constant", [], [t.name], value=t, name=f"const_{t.name}")
                  for t in inits]
        nodes = consts + nodes
        inits = []
    inits += extra_inits or []
    graph = helper.make_graph(
        nodes, "cnn",
        [helper.make_tensor_value_info("x", elem, [batch, 3, spatial, spatial])],
        [helper.make_tensor_value_info("logits", elem, [batch, CLASSES])],
        inits,
    )
    opsets = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, v) for d, v in extra_opsets]
    model = helper.make_model(graph, opset_imports=opsets, producer_name="corpus")
    if ir_version is not None:
        model.ir_version = ir_version
    return model


def save(model: onnx.ModelProto, path: Path) -> Path:
    path.write_bytes(model.SerializeToString())
    return path


def _external(root: Path, name: str, location: str, offset: str | None = None,
              length: str | None = None, data: bytes | None = None) -> Path:
    """The CNN with w2 stored as external data at ``location`` (written only when ``data``)."""
    folder = root / name
    folder.mkdir()
    model = cnn()
    for tensor in model.graph.initializer:
        if tensor.name == "w2":
            raw = tensor.raw_data
            tensor.ClearField("raw_data")
            tensor.data_location = TensorProto.EXTERNAL
            entries = {"location": location}
            if offset is not None:
                entries["offset"] = offset
            if length is not None:
                entries["length"] = length
            elif data is None:
                entries["length"] = str(len(raw))
            for key, value in entries.items():
                entry = tensor.external_data.add()
                entry.key, entry.value = key, value
    return save(model, folder / "model.onnx")


def _w2_bytes() -> bytes:
    return _weights()["w2"].tobytes()


# --- the corpus -----------------------------------------------------------------------------------


def build_corpus(root: Path) -> tuple[Fixtures, list[Case]]:
    root = Path(root)
    good_dir = root / "good"
    good_dir.mkdir(parents=True)
    good = save(cnn(), good_dir / "cnn.onnx")
    plan = good_dir / "plan.json"
    plan.write_text(json.dumps({"keep": {"c1": [0, 2, 4, 6]}}))
    rng = np.random.default_rng(0)
    data = good_dir / "data.npz"
    np.savez(data, x=rng.standard_normal((8, 3, SIZE, SIZE)).astype(np.float32),
             y=rng.integers(0, CLASSES, 8).astype(np.int64))
    fixtures = Fixtures(good, plan, data, "c1")

    bad = root / "bad"
    bad.mkdir()
    cases: list[Case] = []

    def add(name, kind, path, words=(), construct=(), skip=None, commands=None):
        cases.append(Case(name, kind, Path(path), tuple(w.lower() for w in words),
                          tuple(c.lower() for c in construct), skip, commands))

    good_bytes = good.read_bytes()
    # -- files that are not models
    (bad / "zero.onnx").write_bytes(b"")
    add("zero_byte", "model", bad / "zero.onnx", ["empty"])
    (bad / "truncated.onnx").write_bytes(good_bytes[: len(good_bytes) // 2])
    add("truncated_protobuf", "model", bad / "truncated.onnx", ["not a valid onnx model"])
    (bad / "random.onnx").write_bytes(np.random.default_rng(1).bytes(4096))
    add("random_bytes", "model", bad / "random.onnx", ["not a valid onnx model"])
    (bad / "text.onnx").write_text("this is a README, not a model\n" * 10)
    add("text_file", "model", bad / "text.onnx", ["text file"])
    (bad / "folder.onnx").mkdir()
    add("directory", "model", bad / "folder.onnx", ["directory"])
    add("nonexistent", "model", bad / "nothing-here.onnx", ["no such file"])
    os.symlink(bad / "gone.onnx", bad / "dangling-link.onnx")
    add("dangling_symlink", "model", bad / "dangling-link.onnx", ["dangling symbolic link"])
    os.mkfifo(bad / "fifo.onnx")
    add("fifo", "model", bad / "fifo.onnx", ["fifo"])
    locked = save(cnn(), bad / "locked.onnx")
    os.chmod(locked, 0)
    add("unreadable", "model", locked, ["permission denied"],
        skip="running as root: chmod 000 does not block reads" if os.geteuid() == 0 else None)
    no_graph = onnx.ModelProto(ir_version=IR_VERSION)
    save(no_graph, bad / "no_graph.onnx")
    add("no_graph", "model", bad / "no_graph.onnx", ["no graph nodes"])
    model = cnn()
    model.ir_version = 99
    add("ir_version_too_new", "model", save(model, bad / "ir99.onnx"), ["ir_version"])

    # -- broken graphs
    model = cnn(middle=[helper.make_node("Add", ["r1", "loop_back"], ["a"], name="add"),
                        helper.make_node("Relu", ["a"], ["loop_back"], name="relu_back")],
                middle_out="loop_back")
    add("cycle", "model", save(model, bad / "cycle.onnx"), ["cycle"])
    model = cnn(middle=[helper.make_node("Add", ["r1", "ghost"], ["a"], name="add")], middle_out="a")
    add("dangling_input", "model", save(model, bad / "dangling.onnx"), ["dangling input", "ghost"])
    model = cnn(middle=[helper.make_node("Relu", ["r1"], ["c1"], name="dup")])
    add("duplicate_output", "model", save(model, bad / "duplicate.onnx"), ["duplicate output", "c1"])
    model = cnn()
    model.graph.initializer.remove(next(t for t in model.graph.initializer if t.name == "w2"))
    add("missing_initializer", "model", save(model, bad / "missing_init.onnx"),
        ["missing initializer", "w2"])
    model = cnn()
    w2 = next(t for t in model.graph.initializer if t.name == "w2")
    w2.raw_data = w2.raw_data[:100]
    add("initializer_truncated_data", "model", save(model, bad / "short_init.onnx"),
        ["initializer 'w2'", "needs"])
    weights = _weights()
    weights["w1"] = weights["w1"].reshape(CHANNELS, -1)
    add("wrong_rank_weight", "model", save(cnn(weights), bad / "rank2.onnx"),
        ["wrong-rank", "w1", "rank 2"])
    weights = _weights()
    weights["w2"] = np.zeros((CHANNELS, 5, 3, 3), np.float32)
    add("conv_channel_mismatch", "model", save(cnn(weights), bad / "mismatch.onnx"),
        ["channels"])
    weights = _weights()
    weights["w2"][1, 2, 0, 0] = np.nan
    add("nan_weights", "model", save(cnn(weights), bad / "nan.onnx"), ["nan", "w2"])
    weights = _weights()
    weights["fc_w"][0, 0] = np.inf
    add("inf_weights", "model", save(cnn(weights), bad / "inf.onnx"), ["inf", "fc_w"])
    add("symbolic_spatial_dim", "model", save(cnn(spatial="H"), bad / "symbolic.onnx"),
        ["dynamic dimension", "'x'", "axis 2"],
        commands=("analyze", "prune", "compress"))  # onnxruntime runs it fine: validate/bench may

    # -- external data
    outside = root / "outside"
    outside.mkdir()
    (outside / "secret.bin").write_bytes(_w2_bytes())
    path = _external(bad, "ext_dotdot", "../../outside/secret.bin")
    add("ext_dotdot", "model", path, ["external data", "'..'"])
    path = _external(bad, "ext_absolute", str(outside / "secret.bin"))
    add("ext_absolute", "model", path, ["external data", "absolute"])
    path = _external(bad, "ext_symlink_out", "w2.bin")
    os.symlink(outside / "secret.bin", path.parent / "w2.bin")
    add("ext_symlink_out", "model", path, ["external data", "outside", "symbolic link"])
    path = _external(bad, "ext_missing", "weights-missing.bin")
    add("ext_missing_file", "model", path, ["external data", "weights-missing.bin", "missing"])
    path = _external(bad, "ext_beyond", "w2.bin", offset="512", length=str(len(_w2_bytes())))
    (path.parent / "w2.bin").write_bytes(_w2_bytes())
    add("ext_offset_beyond_file", "model", path, ["external data", "lies outside"])
    path = _external(bad, "ext_huge_length", "w2.bin", length=str(2**62))
    (path.parent / "w2.bin").write_bytes(_w2_bytes())
    add("ext_huge_length", "model", path, ["external data", "lies outside"])
    path = _external(bad, "ext_bad_offset", "w2.bin", offset="12abc")
    (path.parent / "w2.bin").write_bytes(_w2_bytes())
    add("ext_non_integer_offset", "model", path, ["external data", "non-integer offset"])
    path = _external(bad, "ext_backslash", "..\\..\\outside\\secret.bin")
    add("ext_backslash_dotdot", "model", path, ["external data", "'..'"])
    path = _external(bad, "ext_empty", "")
    add("ext_empty_location", "model", path, ["external data", "empty location"])
    path = _external(bad, "ext_dir", "weights")
    (path.parent / "weights").mkdir()
    add("ext_location_is_directory", "model", path, ["external data", "directory"])
    path = _external(bad, "ext_dot", ".")
    add("ext_location_is_model_folder", "model", path, ["external data", "directory"])
    path = _external(bad, "ext_fifo", "w2.bin")
    os.mkfifo(path.parent / "w2.bin")
    add("ext_location_is_fifo", "model", path, ["external data", "fifo"])
    path = _external(bad, "ext_device", "null")
    os.symlink("/dev/null", path.parent / "null")
    add("ext_symlink_to_device", "model", path, ["external data", "outside"])

    # -- bad plans (with the good model)
    (bad / "plan_text.json").write_text("keep everything please")
    add("plan_not_json", "plan", bad / "plan_text.json", ["not a json plan"])
    (bad / "plan_list.json").write_text("[1, 2, 3]")
    add("plan_not_object", "plan", bad / "plan_list.json", ["'keep' object"])
    (bad / "plan_unknown.json").write_text(json.dumps({"keep": {"no_such_group": [0]}}))
    add("plan_unknown_group", "plan", bad / "plan_unknown.json", ["unknown group", "no_such_group"])
    (bad / "plan_range.json").write_text(json.dumps({"keep": {"c1": [0, 99]}}))
    add("plan_index_out_of_range", "plan", bad / "plan_range.json", ["out of range", "99"])
    (bad / "plan_empty.json").write_text(json.dumps({"keep": {"c1": []}}))
    add("plan_keeps_nothing", "plan", bad / "plan_empty.json", ["zero channels"])
    (bad / "plan_dir.json").mkdir()
    add("plan_is_directory", "plan", bad / "plan_dir.json", ["plan"])

    # -- bad data (with the good model)
    np.savez(bad / "data_shape.npz", x=np.zeros((4, 3, 5, 5), np.float32))
    add("data_wrong_shape", "data", bad / "data_shape.npz", ["shape"])
    np.savez(bad / "data_labels.npz", x=np.zeros((4, 3, SIZE, SIZE), np.float32),
             y=np.array([0, 1, 7, 2]))
    add("data_labels_out_of_range", "data", bad / "data_labels.npz", ["label", "7"])
    (bad / "data_text.npz").write_text("x,y\n1,2\n")
    add("data_not_npz", "data", bad / "data_text.npz", ["not a readable .npz"])
    np.savez(bad / "data_pickle.npz", x=np.array([object(), 1], dtype=object))
    add("data_pickled_arrays", "data", bad / "data_pickle.npz", ["pickled"])
    np.savez(bad / "data_nan.npz", x=np.full((4, 3, SIZE, SIZE), np.nan, np.float32))
    add("data_nan", "data", bad / "data_nan.npz", ["nan"])

    # -- valid models we may not be able to prune
    valid = root / "valid"
    valid.mkdir()
    add("if_subgraph", "valid", save(_if_model(), valid / "if.onnx"), construct=["if"])
    add("loop_subgraph", "valid", save(_loop_model(), valid / "loop.onnx"), construct=["loop"])
    add("scan_subgraph", "valid", save(_scan_model(), valid / "scan.onnx"), construct=["scan"])
    add("qlinearconv", "valid", save(_qlinear_model(), valid / "qlinear.onnx"),
        construct=["qlinearconv", "quantiz"])
    add("convinteger", "valid", save(_convinteger_model(), valid / "convint.onnx"),
        construct=["convinteger", "integer"])
    add("qdq", "valid", save(_qdq_model(), valid / "qdq.onnx"),
        construct=["dequantizelinear", "quantizelinear", "quantiz"])
    add("float16", "valid", save(cnn(_weights(dtype=np.float16), elem=TensorProto.FLOAT16),
                                 valid / "fp16.onnx"), construct=["float16"])
    add("bfloat16", "valid", save(_bf16_model(), valid / "bf16.onnx"), construct=["bfloat16"])
    custom = [helper.make_node("MySwish", ["r1"], ["s"], name="custom", domain="com.example")]
    add("custom_op_middle", "valid",
        save(cnn(middle=custom, middle_out="s", extra_opsets=(("com.example", 1),)),
             valid / "custom.onnx"), construct=["myswish", "com.example"])
    add("opset11", "valid", save(cnn(opset=11, ir_version=6), valid / "opset11.onnx"),
        construct=["opset"])
    newest = onnx.defs.onnx_opset_version()
    add(f"opset{newest}_newest", "valid", save(cnn(opset=newest, ir_version=None),
                                               valid / "newest.onnx"), construct=["opset"])
    add("dynamic_batch", "valid", save(cnn(batch="batch"), valid / "dynamic.onnx"))
    add("nhwc_transposes", "valid", save(_nhwc_model(), valid / "nhwc.onnx"),
        construct=["transpose"])
    add("constant_node_weights", "valid", save(cnn(const_weights=True), valid / "const.onnx"),
        construct=["constant"])
    return fixtures, cases


def _if_model() -> onnx.ModelProto:
    then_g = helper.make_graph([helper.make_node("Relu", ["r1"], ["t"], name="then_relu")], "then",
                               [], [helper.make_tensor_value_info("t", TensorProto.FLOAT, None)])
    else_g = helper.make_graph([helper.make_node("Sigmoid", ["r1"], ["e"], name="else_sig")], "else",
                               [], [helper.make_tensor_value_info("e", TensorProto.FLOAT, None)])
    node = helper.make_node("If", ["cond"], ["branch"], then_branch=then_g, else_branch=else_g,
                            name="if")
    cond = numpy_helper.from_array(np.array(True), "cond")
    return cnn(middle=[node], middle_out="branch", extra_inits=[cond])


def _loop_model() -> onnx.ModelProto:
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"], name="body_cond"),
         helper.make_node("Relu", ["v_in"], ["v_out"], name="body_relu")],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_in", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_out", TensorProto.FLOAT, None)])
    node = helper.make_node("Loop", ["trip", "keep_going", "r1"], ["looped"], body=body, name="loop")
    extra = [numpy_helper.from_array(np.array(2, np.int64), "trip"),
             numpy_helper.from_array(np.array(True), "keep_going")]
    return cnn(middle=[node], middle_out="looped", extra_inits=extra)


def _scan_model() -> onnx.ModelProto:
    # scan over the channel axis of r1 [N, C, H, W] -> scan axis 1: each step Relu of [N, H, W]
    body = helper.make_graph(
        [helper.make_node("Relu", ["s_in"], ["s_out"], name="scan_relu")], "scan_body",
        [helper.make_tensor_value_info("s_in", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("s_out", TensorProto.FLOAT, None)])
    node = helper.make_node("Scan", ["r1"], ["scanned"], body=body, num_scan_inputs=1,
                            scan_input_axes=[1], scan_output_axes=[1], name="scan")
    return cnn(middle=[node], middle_out="scanned")


def _qlinear_model() -> onnx.ModelProto:
    rng = np.random.default_rng(3)
    w = rng.integers(-20, 20, (CHANNELS, 3, 3, 3)).astype(np.int8)
    fc = _weights()
    inits = [
        numpy_helper.from_array(np.array(0.05, np.float32), "x_scale"),
        numpy_helper.from_array(np.array(0, np.uint8), "x_zp"),
        numpy_helper.from_array(w, "wq"),
        numpy_helper.from_array(np.array(0.02, np.float32), "w_scale"),
        numpy_helper.from_array(np.array(0, np.int8), "w_zp"),
        numpy_helper.from_array(np.array(0.1, np.float32), "y_scale"),
        numpy_helper.from_array(np.array(0, np.uint8), "y_zp"),
        numpy_helper.from_array(fc["w2"], "w2"), numpy_helper.from_array(fc["b2"], "b2"),
        numpy_helper.from_array(fc["fc_w"], "fc_w"), numpy_helper.from_array(fc["fc_b"], "fc_b"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zp"], ["xq"], name="quant"),
        helper.make_node("QLinearConv", ["xq", "x_scale", "x_zp", "wq", "w_scale", "w_zp",
                                         "y_scale", "y_zp"], ["cq"], pads=[1, 1, 1, 1],
                         name="qconv"),
        helper.make_node("DequantizeLinear", ["cq", "y_scale", "y_zp"], ["c1"], name="dequant"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
    ]
    return _tail_model(nodes, inits)


def _convinteger_model() -> onnx.ModelProto:
    rng = np.random.default_rng(4)
    fc = _weights()
    inits = [
        numpy_helper.from_array(np.array(0.05, np.float32), "x_scale"),
        numpy_helper.from_array(np.array(128, np.uint8), "x_zp"),
        numpy_helper.from_array(rng.integers(0, 255, (CHANNELS, 3, 3, 3)).astype(np.uint8), "wq"),
        numpy_helper.from_array(np.array(128, np.uint8), "w_zp"),
        numpy_helper.from_array(fc["w2"], "w2"), numpy_helper.from_array(fc["b2"], "b2"),
        numpy_helper.from_array(fc["fc_w"], "fc_w"), numpy_helper.from_array(fc["fc_b"], "fc_b"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zp"], ["xq"], name="quant"),
        helper.make_node("ConvInteger", ["xq", "wq", "x_zp", "w_zp"], ["ci"], pads=[1, 1, 1, 1],
                         name="convint"),
        helper.make_node("Cast", ["ci"], ["c1"], to=TensorProto.FLOAT, name="cast"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
    ]
    return _tail_model(nodes, inits)


def _qdq_model() -> onnx.ModelProto:
    """QDQ: conv1's weight is an int8 initializer behind DequantizeLinear; activations Q/DQ."""
    rng = np.random.default_rng(5)
    fc = _weights()
    inits = [
        numpy_helper.from_array(np.array(0.05, np.float32), "x_scale"),
        numpy_helper.from_array(np.array(0, np.int8), "x_zp"),
        numpy_helper.from_array(rng.integers(-20, 20, (CHANNELS, 3, 3, 3)).astype(np.int8), "wq"),
        numpy_helper.from_array(np.array(0.02, np.float32), "w_scale"),
        numpy_helper.from_array(np.array(0, np.int8), "w_zp"),
        numpy_helper.from_array(fc["b1"], "b1"),
        numpy_helper.from_array(fc["w2"], "w2"), numpy_helper.from_array(fc["b2"], "b2"),
        numpy_helper.from_array(fc["fc_w"], "fc_w"), numpy_helper.from_array(fc["fc_b"], "fc_b"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zp"], ["xq"], name="quant"),
        helper.make_node("DequantizeLinear", ["xq", "x_scale", "x_zp"], ["xdq"], name="dequant_x"),
        helper.make_node("DequantizeLinear", ["wq", "w_scale", "w_zp"], ["w1"], name="dequant_w"),
        helper.make_node("Conv", ["xdq", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
    ]
    return _tail_model(nodes, inits)


def _tail_model(head: list[onnx.NodeProto], inits: list[onnx.TensorProto],
                elem: int = TensorProto.FLOAT) -> onnx.ModelProto:
    nodes = head + [
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], name="conv2"),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("GlobalAveragePool", ["r2"], ["p"], name="gap"),
        helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["logits"], transB=1, name="fc"),
    ]
    graph = helper.make_graph(nodes, "tail",
                              [helper.make_tensor_value_info("x", elem, ["N", 3, SIZE, SIZE])],
                              [helper.make_tensor_value_info("logits", elem, ["N", CLASSES])],
                              inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    return model


def _bf16_model() -> onnx.ModelProto:
    inits = []
    for name, value in _weights().items():
        tensor = helper.make_tensor(name, TensorProto.BFLOAT16, value.shape,
                                    value.astype(np.float32).reshape(-1).tolist())
        inits.append(tensor)
    # Conv and Gemm accept bfloat16 from opset 22 on
    return cnn(weights={}, elem=TensorProto.BFLOAT16, extra_inits=inits, opset=22)


def _nhwc_model() -> onnx.ModelProto:
    w = _weights()
    nodes = [
        helper.make_node("Transpose", ["x"], ["x_nchw"], perm=[0, 3, 1, 2], name="to_nchw"),
        helper.make_node("Conv", ["x_nchw", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Transpose", ["c1"], ["c1_nhwc"], perm=[0, 2, 3, 1], name="to_nhwc"),
        helper.make_node("Relu", ["c1_nhwc"], ["r1_nhwc"], name="relu1"),
        helper.make_node("Transpose", ["r1_nhwc"], ["r1"], perm=[0, 3, 1, 2], name="back_nchw"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], name="conv2"),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("GlobalAveragePool", ["r2"], ["p"], name="gap"),
        helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["logits"], transB=1, name="fc"),
    ]
    graph = helper.make_graph(
        nodes, "nhwc",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", SIZE, SIZE, 3])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", CLASSES])],
        [numpy_helper.from_array(v, k) for k, v in w.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    return model


def big_cnn(path: Path, megabytes: int = 24) -> Path:
    """A valid CNN with about ``megabytes`` of weights (for the kill tests)."""
    channels = int((megabytes * 2**20 / 4 / 9) ** 0.5)
    rng = np.random.default_rng(7)
    weights = _weights()
    weights["w1"] = rng.standard_normal((channels, 3, 3, 3)).astype(np.float32)
    weights["b1"] = np.zeros(channels, np.float32)
    weights["w2"] = (rng.standard_normal((CHANNELS, channels, 3, 3)) * 0.01).astype(np.float32)
    mid = rng.standard_normal((channels, channels, 3, 3)).astype(np.float32) * 0.01
    middle = [helper.make_node("Conv", ["r1", "w_mid"], ["c_mid"], pads=[1, 1, 1, 1], name="conv_mid"),
              helper.make_node("Relu", ["c_mid"], ["r_mid"], name="relu_mid")]
    model = cnn(weights, middle=middle, middle_out="r_mid",
                extra_inits=[numpy_helper.from_array(mid, "w_mid")])
    return save(model, path)
