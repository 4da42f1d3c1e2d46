"""The report wiring: ``compress --html/--summary-md`` and ``onnxprune report R.json``."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from onnxprune.cli import main

ROOT = Path(__file__).resolve().parent.parent

pytest.importorskip("matplotlib", reason="the HTML report needs the [report] extra")


def test_compress_writes_html_and_markdown_and_report_rerenders(tmp_path):
    html, md, js = tmp_path / "r.html", tmp_path / "r.md", tmp_path / "r.json"
    argv = ["compress", str(ROOT / "models" / "vgg.onnx"), "--data",
            str(ROOT / "models" / "mnist_train.npz"), "--limit", "300", "--method", "l1",
            "--calibration-samples", "32", "-o", str(tmp_path / "p.onnx"), "--report", str(js),
            "--html", str(html), "--summary-md", str(md), "--quiet"]
    result = CliRunner().invoke(main, argv)
    assert result.exit_code == 0, result.output
    page = html.read_text()
    assert page.count("<svg") >= 2 and "http://" not in page.replace("http://www.w3.org", "")
    assert md.read_text().lstrip().startswith("|") or "|" in md.read_text()
    again = tmp_path / "again.html"
    result = CliRunner().invoke(main, ["report", str(js), "-o", str(again), "--no-profile"])
    assert result.exit_code == 0, result.output
    assert again.exists() and "<svg" in again.read_text()


def test_report_of_a_file_that_is_not_a_report(tmp_path):
    bad = tmp_path / "x.json"
    bad.write_text("[1, 2]")
    result = CliRunner().invoke(main, ["report", str(bad)])
    assert result.exit_code == 2 and "not a compress report" in result.stderr
    assert not (tmp_path / "x.html").exists()
