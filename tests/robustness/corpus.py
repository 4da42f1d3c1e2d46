"""Builds the hostile-input corpus in a temporary folder at test time (nothing binary is committed).

``corpus_cases()`` declares one ``Case`` per bad or unusual input without writing anything;
``build_corpus(root)`` writes good fixtures (a small CNN, a plan, data) and every case's file(s), and
returns ``(fixtures, {case name: path})``. ``Case.kind`` says what it replaces in a command line:
``model`` (bad model file), ``plan`` (bad plan file), ``data`` (bad data file) or ``valid`` (a
valid model we may not be able to prune: it must either work, exit 0, or be refused with exit 2
naming the construct).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
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
    make: Callable[[Path], Path]  # writes the case under the corpus root, returns its path
    words: tuple[str, ...] = ()  # lower-case words the one-line error must contain (bad inputs)
    construct: tuple[str, ...] = ()  # valid models: any of these must be named when refused
    skip: str | None = None
    commands: tuple[str, ...] | None = None  # only these subcommands (None: all that apply)


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
# Cases are declared here without touching the disk (so that pytest can collect them); each one's
# ``make(root)`` writes its file(s) under ``root`` when ``build_corpus`` runs inside a fixture.


def _write_bytes(rel: str, data: bytes):
    def make(root: Path) -> Path:
        (root / rel).write_bytes(data)
        return root / rel
    return make


def _write_text(rel: str, text: str):
    def make(root: Path) -> Path:
        (root / rel).write_text(text)
        return root / rel
    return make


def _saved(rel: str, build):
    return lambda root: save(build(), root / rel)


def _npz(rel: str, arrays):
    def make(root: Path) -> Path:
        np.savez(root / rel, **arrays())
        return root / rel
    return make


def _mkdir(rel: str):
    def make(root: Path) -> Path:
        (root / rel).mkdir()
        return root / rel
    return make


def _symlink(rel: str, target: str):
    def make(root: Path) -> Path:
        os.symlink(root / target, root / rel)
        return root / rel
    return make


def _fifo(rel: str):
    def make(root: Path) -> Path:
        os.mkfifo(root / rel)
        return root / rel
    return make


def _locked(root: Path) -> Path:
    path = save(cnn(), root / "bad" / "locked.onnx")
    os.chmod(path, 0)
    return path


def _good_bytes() -> bytes:
    return cnn().SerializeToString()


def _with(transform):
    """The CNN after ``transform(model)`` (which edits it in place)."""
    def build():
        model = cnn()
        transform(model)
        return model
    return build


def _weights_with(edit):
    def build():
        weights = _weights()
        edit(weights)
        return cnn(weights)
    return build


def _ext(name: str, location: str, offset=None, length=None, sidecar=None):
    """An external-data case; ``sidecar(folder, root)`` creates the file at ``location``."""
    def make(root: Path) -> Path:
        path = _external(root / "bad", name, location, offset=offset, length=length)
        if sidecar is not None:
            sidecar(path.parent, root)
        return path
    return make


def _bytes_file(name: str, data_fn):
    return lambda folder, root: (folder / name).write_bytes(data_fn())


def _remove_w2(model):
    model.graph.initializer.remove(next(t for t in model.graph.initializer if t.name == "w2"))


def _truncate_w2(model):
    w2 = next(t for t in model.graph.initializer if t.name == "w2")
    w2.raw_data = w2.raw_data[:100]


def _set_ir(version):
    def edit(model):
        model.ir_version = version
    return edit


def _set(key, value_fn, index=None):
    def edit(weights):
        if index is None:
            weights[key] = value_fn(weights[key])
        else:
            weights[key][index] = value_fn(None)
    return edit


def _model_cases(add) -> None:
    add("zero_byte", "model", _write_bytes("bad/zero.onnx", b""), ["empty"])
    good = _good_bytes()
    add("truncated_protobuf", "model", _write_bytes("bad/truncated.onnx", good[: len(good) // 2]),
        ["not a valid onnx model"])
    add("random_bytes", "model",
        _write_bytes("bad/random.onnx", np.random.default_rng(1).bytes(4096)),
        ["not a valid onnx model"])
    add("text_file", "model", _write_text("bad/text.onnx", "this is a README, not a model\n" * 10),
        ["text file"])
    add("directory", "model", _mkdir("bad/folder.onnx"), ["directory"])
    add("nonexistent", "model", lambda root: root / "bad" / "nothing-here.onnx", ["no such file"])
    add("dangling_symlink", "model", _symlink("bad/dangling-link.onnx", "bad/gone.onnx"),
        ["dangling symbolic link"])
    add("fifo", "model", _fifo("bad/fifo.onnx"), ["fifo"])
    add("unreadable", "model", _locked, ["permission denied"],
        skip="running as root: chmod 000 does not block reads" if os.geteuid() == 0 else None)
    add("no_graph", "model", _saved("bad/no_graph.onnx", lambda: onnx.ModelProto(ir_version=IR_VERSION)),
        ["no graph nodes"])
    add("ir_version_too_new", "model", _saved("bad/ir99.onnx", _with(_set_ir(99))), ["ir_version"])


def _graph_cases(add) -> None:
    cycle = lambda: cnn(middle=[helper.make_node("Add", ["r1", "loop_back"], ["a"], name="add"),  # noqa: E731
                                helper.make_node("Relu", ["a"], ["loop_back"], name="relu_back")],
                        middle_out="loop_back")
    add("cycle", "model", _saved("bad/cycle.onnx", cycle), ["cycle"])
    dangling = lambda: cnn(middle=[helper.make_node("Add", ["r1", "ghost"], ["a"], name="add")],  # noqa: E731
                           middle_out="a")
    add("dangling_input", "model", _saved("bad/dangling.onnx", dangling), ["dangling input", "ghost"])
    duplicate = lambda: cnn(middle=[helper.make_node("Relu", ["r1"], ["c1"], name="dup")])  # noqa: E731
    add("duplicate_output", "model", _saved("bad/duplicate.onnx", duplicate),
        ["duplicate output", "c1"])
    add("missing_initializer", "model", _saved("bad/missing_init.onnx", _with(_remove_w2)),
        ["missing initializer", "w2"])
    add("initializer_truncated_data", "model", _saved("bad/short_init.onnx", _with(_truncate_w2)),
        ["initializer 'w2'", "needs"])
    add("wrong_rank_weight", "model",
        _saved("bad/rank2.onnx", _weights_with(_set("w1", lambda w: w.reshape(CHANNELS, -1)))),
        ["wrong-rank", "w1", "rank 2"])
    add("conv_channel_mismatch", "model",
        _saved("bad/mismatch.onnx",
               _weights_with(_set("w2", lambda w: np.zeros((CHANNELS, 5, 3, 3), np.float32)))),
        ["channels"])
    add("nan_weights", "model",
        _saved("bad/nan.onnx", _weights_with(_set("w2", lambda _: np.nan, (1, 2, 0, 0)))),
        ["nan", "w2"])
    add("inf_weights", "model",
        _saved("bad/inf.onnx", _weights_with(_set("fc_w", lambda _: np.inf, (0, 0)))),
        ["inf", "fc_w"])
    add("symbolic_spatial_dim", "model", _saved("bad/symbolic.onnx", lambda: cnn(spatial="H")),
        ["dynamic dimension", "'x'", "axis 2"],
        commands=("analyze", "prune", "compress"))  # onnxruntime runs it fine: validate/bench may


def _external_cases(add) -> None:
    secret = lambda: _w2_bytes()  # noqa: E731
    w2 = _bytes_file("w2.bin", secret)
    add("ext_dotdot", "model", _ext("ext_dotdot", "../../outside/secret.bin"),
        ["external data", "'..'"])
    add("ext_absolute", "model",
        lambda root: _ext("ext_absolute", str(root / "outside" / "secret.bin"))(root),
        ["external data", "absolute"])
    add("ext_symlink_out", "model",
        _ext("ext_symlink_out", "w2.bin",
             sidecar=lambda folder, root: os.symlink(root / "outside" / "secret.bin", folder / "w2.bin")),
        ["external data", "outside", "symbolic link"])
    add("ext_missing_file", "model", _ext("ext_missing", "weights-missing.bin"),
        ["external data", "weights-missing.bin", "missing"])
    add("ext_offset_beyond_file", "model",
        _ext("ext_beyond", "w2.bin", offset="512", length=str(len(_w2_bytes())), sidecar=w2),
        ["external data", "lies outside"])
    add("ext_huge_length", "model", _ext("ext_huge_length", "w2.bin", length=str(2**62), sidecar=w2),
        ["external data", "lies outside"])
    add("ext_non_integer_offset", "model",
        _ext("ext_bad_offset", "w2.bin", offset="12abc", sidecar=w2),
        ["external data", "non-integer offset"])
    add("ext_backslash_dotdot", "model", _ext("ext_backslash", "..\\..\\outside\\secret.bin"),
        ["external data", "'..'"])
    add("ext_empty_location", "model", _ext("ext_empty", ""), ["external data", "empty location"])
    add("ext_location_is_directory", "model",
        _ext("ext_dir", "weights", sidecar=lambda folder, root: (folder / "weights").mkdir()),
        ["external data", "directory"])
    add("ext_location_is_model_folder", "model", _ext("ext_dot", "."), ["external data", "directory"])
    add("ext_location_is_fifo", "model",
        _ext("ext_fifo", "w2.bin", sidecar=lambda folder, root: os.mkfifo(folder / "w2.bin")),
        ["external data", "fifo"])
    add("ext_symlink_to_device", "model",
        _ext("ext_device", "null", sidecar=lambda folder, root: os.symlink("/dev/null", folder / "null")),
        ["external data", "outside"])


def _plan_and_data_cases(add) -> None:
    add("plan_not_json", "plan", _write_text("bad/plan_text.json", "keep everything please"),
        ["not a json plan"])
    add("plan_not_object", "plan", _write_text("bad/plan_list.json", "[1, 2, 3]"), ["'keep' object"])
    add("plan_unknown_group", "plan",
        _write_text("bad/plan_unknown.json", json.dumps({"keep": {"no_such_group": [0]}})),
        ["unknown group", "no_such_group"])
    add("plan_index_out_of_range", "plan",
        _write_text("bad/plan_range.json", json.dumps({"keep": {"c1": [0, 99]}})),
        ["out of range", "99"])
    add("plan_keeps_nothing", "plan", _write_text("bad/plan_empty.json", json.dumps({"keep": {"c1": []}})),
        ["zero channels"])
    add("plan_is_directory", "plan", _mkdir("bad/plan_dir.json"), ["plan"])
    add("data_wrong_shape", "data",
        _npz("bad/data_shape.npz", lambda: {"x": np.zeros((4, 3, 5, 5), np.float32)}), ["shape"])
    add("data_labels_out_of_range", "data",
        _npz("bad/data_labels.npz", lambda: {"x": np.zeros((4, 3, SIZE, SIZE), np.float32),
                                             "y": np.array([0, 1, 7, 2])}), ["label", "7"])
    add("data_not_npz", "data", _write_text("bad/data_text.npz", "x,y\n1,2\n"), ["not a readable .npz"])
    add("data_pickled_arrays", "data",
        _npz("bad/data_pickle.npz", lambda: {"x": np.array([object(), 1], dtype=object)}), ["pickled"])
    add("data_nan", "data",
        _npz("bad/data_nan.npz", lambda: {"x": np.full((4, 3, SIZE, SIZE), np.nan, np.float32)}),
        ["nan"])


def _valid_cases(add) -> None:
    def valid(name, file, build, construct=()):
        add(name, "valid", _saved(f"valid/{file}", build), construct=construct)

    valid("if_subgraph", "if.onnx", _if_model, ["if"])
    valid("loop_subgraph", "loop.onnx", _loop_model, ["loop"])
    valid("scan_subgraph", "scan.onnx", _scan_model, ["scan"])
    valid("qlinearconv", "qlinear.onnx", _qlinear_model, ["qlinearconv", "quantiz"])
    valid("convinteger", "convint.onnx", _convinteger_model, ["convinteger", "integer"])
    valid("qdq", "qdq.onnx", _qdq_model, ["dequantizelinear", "quantizelinear", "quantiz"])
    valid("float16", "fp16.onnx",
          lambda: cnn(_weights(dtype=np.float16), elem=TensorProto.FLOAT16), ["float16"])
    valid("bfloat16", "bf16.onnx", _bf16_model, ["bfloat16"])
    custom = [helper.make_node("MySwish", ["r1"], ["s"], name="custom", domain="com.example")]
    valid("custom_op_middle", "custom.onnx",
          lambda: cnn(middle=custom, middle_out="s", extra_opsets=(("com.example", 1),)),
          ["myswish", "com.example"])
    valid("opset11", "opset11.onnx", lambda: cnn(opset=11, ir_version=6), ["opset"])
    newest = onnx.defs.onnx_opset_version()
    valid(f"opset{newest}_newest", "newest.onnx", lambda: cnn(opset=newest, ir_version=None), ["opset"])
    valid("dynamic_batch", "dynamic.onnx", lambda: cnn(batch="batch"))
    valid("nhwc_transposes", "nhwc.onnx", _nhwc_model, ["transpose"])
    valid("constant_node_weights", "const.onnx", lambda: cnn(const_weights=True), ["constant"])


def corpus_cases() -> list[Case]:
    """Every case, declared without writing anything (their paths are set by ``build_corpus``)."""
    cases: list[Case] = []

    def add(name, kind, make, words=(), construct=(), skip=None, commands=None):
        cases.append(Case(name, kind, make, tuple(w.lower() for w in words),
                          tuple(c.lower() for c in construct), skip, commands))

    for group in (_model_cases, _graph_cases, _external_cases, _plan_and_data_cases, _valid_cases):
        group(add)
    return cases


def build_corpus(root: Path) -> tuple[Fixtures, dict[str, Path]]:
    """Write the good fixtures and every case's file(s) under ``root``: (fixtures, case paths)."""
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
    for folder in ("bad", "valid", "outside"):
        (root / folder).mkdir()
    (root / "outside" / "secret.bin").write_bytes(_w2_bytes())
    paths = {case.name: Path(case.make(root)) for case in corpus_cases()}
    return Fixtures(good, plan, data, "c1"), paths


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
