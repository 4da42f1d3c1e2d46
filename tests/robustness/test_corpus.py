"""Acceptance: every bad or hostile input through every subcommand it applies to.

For each run: the documented exit code (2 for bad input; valid-but-unprunable models 0 or 2 naming
the construct, never 3), one error line naming the problem, no traceback, no output file, inputs
unchanged. The corpus is built in a temporary folder by ``corpus.py`` (nothing binary committed).
"""

from __future__ import annotations

import hashlib
import json
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parent))
from corpus import build_corpus, corpus_cases  # noqa: E402

from onnxprune.cli import main  # noqa: E402
from onnxprune.graph import TEMP_PREFIX, load_model  # noqa: E402

CASES = corpus_cases()  # declared only: the files are written by the ``corpus`` fixture
BY_NAME = {c.name: c for c in CASES}


class Corpus:
    """The corpus written in a temporary folder: its root, good fixtures and each case's path."""

    def __init__(self, root: Path):
        self.root = root
        self.fixtures, self.paths = build_corpus(root)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Corpus:
    return Corpus(tmp_path_factory.mktemp("corpus") / "corpus")

XFAIL: dict = {}  # (case, command) -> reason; strict xfails turn red once fixed


def _commands() -> list[str]:
    return sorted(main.commands)


def _params(name: str) -> set[str]:
    command = main.commands.get(name)
    return {p.name for p in command.params} if command else set()


def _runs():
    """(case, command) pairs: each case through every subcommand it applies to, if it exists."""
    commands = set(_commands())
    pairs = []
    for case in CASES:
        if case.kind in ("model", "valid"):
            wanted = ["analyze", "prune", "validate", "validate-pruned", "bench", "compress"]
        elif case.kind == "plan":
            wanted = ["prune"]
        else:  # data
            wanted = ["validate"] + (["compress"] if "data" in _params("compress") else [])
        for name in wanted:
            if name.split("-")[0] in commands and (case.commands is None
                                                   or name.split("-")[0] in case.commands):
                marks = []
                if case.skip:
                    marks.append(pytest.mark.skip(reason=case.skip))
                if (case.name, name) in XFAIL:
                    marks.append(pytest.mark.xfail(strict=True, reason=XFAIL[(case.name, name)]))
                pairs.append(pytest.param(case.name, name, id=f"{case.name}-{name}", marks=marks))
    return pairs


def _digest(root: Path) -> dict[str, str]:
    out = {}
    for path in sorted(root.rglob("*")):
        try:
            info = path.lstat()
        except OSError:
            continue
        if stat.S_ISREG(info.st_mode) and info.st_mode & 0o444:
            out[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
        elif stat.S_ISLNK(info.st_mode):
            out[str(path)] = "link:" + str(path.readlink())
        elif stat.S_ISREG(info.st_mode):
            out[str(path)] = f"size:{info.st_size}:{info.st_mtime_ns}"
    return out


def _auto_plan(path: Path, tmp: Path) -> Path:
    """For valid models: halve the first prunable group analyze reports (empty plan if none)."""
    result = CliRunner().invoke(main, ["analyze", "--json", str(path)])
    keep = {}
    if result.exit_code == 0:
        groups = [g for g in json.loads(result.stdout)["groups"] if g["prunable"]]
        if groups:
            keep = {groups[0]["id"]: list(range(0, groups[0]["channels"], 2))}
    plan = tmp / "auto_plan.json"
    plan.write_text(json.dumps({"keep": keep}))
    return plan


def _argv(case, corpus: Corpus, command: str, out: Path, tmp: Path) -> tuple[list[str], list[Path]]:
    fx, path = corpus.fixtures, corpus.paths[case.name]
    model = str(path) if case.kind in ("model", "valid") else str(fx.model)
    output = out / "out.onnx"
    if command == "analyze":
        return ["analyze", "--json", model], []
    if command == "prune":
        plan = str(path) if case.kind == "plan" else (
            str(_auto_plan(path, tmp)) if case.kind == "valid" else str(fx.plan))
        return ["prune", model, "--plan", plan, "-o", str(output)], [output, out / "out.onnx.data"]
    if command == "validate":
        data = str(path) if case.kind == "data" else str(fx.data)
        return ["validate", model, str(fx.model), "--data", data, "--provider", "cpu"], []
    if command == "validate-pruned":
        return ["validate", str(fx.model), model, "--data", str(fx.data), "--provider", "cpu"], []
    if command == "bench":
        return ["bench", model, "--provider", "cpu", "--warmup", "0", "--iterations", "1"], []
    if command == "compress":
        argv = ["compress", model, "--target", "0.5", "-o", str(output), "--quiet"]
        if "iterations" in _params("compress"):
            argv += ["--iterations", "2"]  # robustness, not quality: keep it fast
        if case.kind == "data":
            argv += ["--data", str(path)]
        return argv, [output, out / "out.onnx.data"]
    raise AssertionError(command)


@pytest.mark.parametrize("case_name,command", _runs())
def test_corpus(case_name, command, tmp_path, corpus):
    case = BY_NAME[case_name]
    out = tmp_path / "out"
    out.mkdir()
    argv, outputs = _argv(case, corpus, command, out, tmp_path)
    before = _digest(corpus.root)
    result = CliRunner().invoke(main, argv)
    after = _digest(corpus.root)
    stderr, stdout = result.stderr, result.stdout
    where = f"onnxprune {' '.join(argv)} -> {result.exit_code}\n{stderr[-2000:]}"

    assert result.exit_code in (0, 2) if case.kind == "valid" else result.exit_code == 2, where
    assert "Traceback" not in stderr and "Traceback" not in stdout, where
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), \
        where
    assert before == after, "an input file changed"
    leftovers = [p.name for p in out.iterdir() if p.name.startswith(TEMP_PREFIX)]
    assert leftovers == [], leftovers

    if result.exit_code != 0:
        # ours: "onnxprune: error: ..."; click's own usage errors: "Error: ..." after the usage
        errors = [line for line in stderr.splitlines()
                  if line.startswith(("onnxprune: error:", "Error: "))]
        assert len(errors) == 1, where
        message = errors[0].lower()
        assert len(message) < 600, message
        for word in case.words:
            assert word in message, f"'{word}' not in: {errors[0]}"
        if case.kind == "valid" and command in ("analyze", "prune") and case.construct:
            assert any(word in message for word in case.construct), \
                f"the error does not name the construct ({case.construct}): {errors[0]}"
        for path in outputs:
            assert not path.exists(), f"{path} written by a failed run"
        return

    assert case.kind == "valid", where
    if command == "analyze":
        report = json.loads(stdout)
        assert {"macs", "params", "groups", "barriers"} <= set(report)
    if command == "prune":
        _check_pruned_runs(corpus.paths[case.name], outputs[0])


def _check_pruned_runs(original: Path, pruned: Path) -> None:
    """A pruned model that onnxprune wrote must load, and run wherever the original runs."""
    import onnxruntime as ort

    proto = load_model(pruned).model
    assert len(proto.graph.node) > 0
    try:
        reference = ort.InferenceSession(str(original), providers=["CPUExecutionProvider"])
    except Exception:
        return  # onnxruntime cannot run the original (e.g. a custom op): nothing to compare
    session = ort.InferenceSession(str(pruned), providers=["CPUExecutionProvider"])
    feed = {}
    for value in reference.get_inputs():
        shape = [d if isinstance(d, int) else 1 for d in value.shape]
        dtype = {"tensor(float)": np.float32, "tensor(float16)": np.float16}.get(value.type)
        if dtype is None:
            return
        feed[value.name] = np.random.default_rng(0).standard_normal(shape).astype(dtype)
    expected = [o.shape for o in reference.run(None, feed)]
    assert [o.shape for o in session.run(None, feed)] == expected


def test_corpus_is_big_enough():
    bad = [c for c in CASES if c.kind != "valid"]
    assert len(bad) >= 25 and len(CASES) >= 40


def test_if_subgraph_is_reported_as_a_barrier(corpus):
    result = CliRunner().invoke(main, ["analyze", "--json", str(corpus.paths["if_subgraph"])])
    assert result.exit_code == 0
    barriers = json.loads(result.stdout)["barriers"]
    assert any(b["op"] == "If" for b in barriers), barriers


@pytest.mark.parametrize("name,op", [("scan_subgraph", "Scan")])
def test_subgraph_ops_are_barriers(name, op, corpus):
    result = CliRunner().invoke(main, ["analyze", "--json", str(corpus.paths[name])])
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert any(b["op"] == op for b in report["barriers"])
    assert any(g["prunable"] for g in report["groups"])  # the rest stays prunable


# --- real exit codes through a subprocess ------------------------------------------------------


def _python_m(*args):
    return subprocess.run([sys.executable, "-m", "onnxprune", *map(str, args)],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("case_name,argv,words", [
    ("zero_byte", ["analyze"], ["empty"]),
    ("cycle", ["prune", "--plan", "{plan}", "-o", "{out}"], ["cycle"]),
    ("ext_dotdot", ["analyze", "--json"], ["external data", "'..'"]),
    ("nan_weights", ["analyze"], ["nan", "w2"]),
])
def test_subprocess_exit_codes(case_name, argv, words, tmp_path, corpus):
    path = corpus.paths[case_name]
    argv = [a.format(out=tmp_path / "o.onnx", plan=corpus.fixtures.plan) for a in argv]
    argv = argv[:1] + [path] + argv[1:] if argv[0] != "analyze" else argv + [path]
    proc = _python_m(*argv)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("onnxprune: error:")
    assert all(w in lines[0].lower() for w in words), lines[0]
    assert not (tmp_path / "o.onnx").exists()


def test_subprocess_usage_error_exits_2(corpus):
    model = corpus.fixtures.model
    proc = _python_m("analyze", "--no-such-option", model)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert _python_m("no-such-command").returncode == 2
    assert _python_m("prune", model).returncode == 2  # missing --plan / -o
