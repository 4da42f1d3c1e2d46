"""The HTML report and the Markdown summary, rendered from a real (short) compress run."""

from __future__ import annotations

import copy
import json
import sys
from html.parser import HTMLParser

import pytest

import onnxprune
from onnxprune.errors import OnnxPruneError
from onnxprune.api import analyze  # noqa: E402
from onnxprune.htmlreport import build_report_inputs, render_html, summary_markdown, write_html
from onnxprune.report import human

SECTIONS = ("summary", "layers", "barriers", "latency", "profile", "settings")


class _Page(HTMLParser):
    """Every element's tag and attributes, and the text inside each section."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, dict(attrs)))

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)

    def handle_data(self, data):
        self.text.append(data)

    def ids(self) -> list[str]:
        return [a["id"] for _, a in self.elements if "id" in a]


def parse(page: str) -> _Page:
    parser = _Page()
    parser.feed(page)
    return parser


@pytest.fixture(scope="module")
def run(models_dir, tmp_path_factory):
    """A short autobot compress of the reference ResNet with a benchmark, and its report file."""
    folder = tmp_path_factory.mktemp("htmlreport")
    config = onnxprune.CompressConfig(
        model=str(models_dir / "resnet.onnx"), output=str(folder / "pruned.onnx"), target=0.5,
        data=str(models_dir / "mnist_train.npz"), eval_data=str(models_dir / "mnist_test.npz"),
        report=str(folder / "report.json"), iterations=5, calibration_samples=32, round_to=8,
        bench=True, provider="cpu", quiet=True)
    onnxprune.compress(config)
    with open(config.report, encoding="utf-8") as handle:
        report = json.load(handle)
    return report, folder


@pytest.fixture(scope="module")
def inputs(run):
    report, folder = run
    return build_report_inputs(report, analyze, base=folder, runs=5)


@pytest.fixture(scope="module")
def page(run, inputs):
    return render_html(run[0], **inputs)


def test_every_section_is_present_and_linked(page):
    parsed = parse(page)
    sections = [a["id"] for tag, a in parsed.elements if tag == "section"]
    assert sections == list(SECTIONS)
    links = {a["href"] for tag, a in parsed.elements if tag == "a"}
    assert {f"#{s}" for s in SECTIONS} <= links


def test_summary_holds_the_report_figures(run, page):
    report = run[0]
    text = " ".join(parse(page).text)
    assert human(report["macs_before"]) in text and human(report["macs_after"]) in text
    assert human(report["params_before"]) in text and human(report["params_after"]) in text
    assert f"{100 * report['macs_ratio']:.2f}%" in text
    assert f"{report['accuracy_before']:.2f}%" in text
    assert f"{report['accuracy_after']:.2f}%" in text
    assert f"{100 * report['validation']['agreement']:.2f}%" in text
    cosine = report["validation"]["outputs"]["logits"]["cosine"]
    assert f"{cosine:.4g}" in text
    for batch, speed in report["benchmark"]["models"][1]["speedup"].items():
        assert f"{speed['p50']:.2f}×" in text
        assert f"Latency p50, batch {batch}" in text
    assert str(report["settings"]["calibration_samples"]) in text


def _chart_ids(parsed: _Page, chart: str) -> set[str]:
    svgs = [a for tag, a in parsed.elements if tag == "svg" and a.get("id") == chart]
    assert len(svgs) == 1, f"no <svg id={chart}>"
    return {i for i in parsed.ids() if i.startswith(chart + "-")}


def test_charts_are_inline_svg_with_one_element_per_data_point(run, inputs, page):
    report, parsed = run[0], parse(page)
    ids = parsed.ids()
    assert len(ids) == len(set(ids)), "duplicate ids"
    channels = _chart_ids(parsed, "chart-channels")
    for i in range(len(report["groups"])):
        assert {f"chart-channels-kept-{i}", f"chart-channels-total-{i}"} <= channels
    macs = _chart_ids(parsed, "chart-macs")
    for i in range(len(inputs["analysis"]["original"]["macs_per_node"])):
        assert {f"chart-macs-before-{i}", f"chart-macs-after-{i}"} <= macs
    latency = _chart_ids(parsed, "chart-latency")
    for batch in report["benchmark"]["settings"]["batches"]:
        assert f"chart-latency-speedup-b{batch}" in latency
        for j in range(len(report["benchmark"]["models"])):
            assert {f"chart-latency-{p}-m{j}-b{batch}" for p in ("p50", "p90", "p99")} <= latency
    comparison = inputs["profile"]["comparisons"][0]
    ops = _chart_ids(parsed, "chart-profile-ops")
    assert {f"chart-profile-ops-pruned-{i}" for i in range(len(comparison["ops"]))} <= ops
    layers = _chart_ids(parsed, "chart-profile-layers")
    with_macs = [r for r in comparison["layers"] if r["mac_ratio"] is not None]
    assert {f"chart-profile-layers-time-{i}" for i in range(len(with_macs))} <= layers
    assert "<title>" in page  # hover tooltips on the data points


def test_page_loads_nothing_from_anywhere(page):
    parsed = parse(page)
    refs = [v for _, a in parsed.elements for k, v in a.items()
            if k in ("src", "href", "xlink:href", "action", "data") and v]
    assert refs, "the page should at least link its own sections"
    assert all(v.startswith("#") for v in refs), refs
    assert not any(tag in ("script", "link", "img", "iframe") for tag, _ in parsed.elements)
    assert "@import" not in page and "url(http" not in page and "<!DOCTYPE svg" not in page
    csp = [a for tag, a in parsed.elements if tag == "meta" and a.get("http-equiv")]
    assert csp and "default-src 'none'" in csp[0]["content"]


def test_profile_section_names_the_ops_behind_the_gap(inputs, page):
    comparison = inputs["profile"]["comparisons"][0]
    parsed = parse(page)
    culprits = comparison["gap"]["culprits"]
    if comparison["gap_us"] > 0:
        assert culprits and 'id="gap-culprits"' in page
        block = page.split('id="gap-culprits"', 1)[1].split("</div>", 1)[0]
        for c in culprits:
            assert c["op"].replace("(", "") in block.replace("(", "")
    else:
        assert "no gap to explain" in page
    worse = sum(r["worse_than_macs"] for r in comparison["layers"])
    table = page.split('id="profile-layers-table"', 1)[1].split("</table>", 1)[0]
    assert table.count('class="worse"') == worse
    assert any(tag == "table" and a.get("id") == "profile-nodes-table"
               for tag, a in parsed.elements)


def test_text_is_escaped(run, inputs):
    report = copy.deepcopy(run[0])
    report["model"] = '<script>alert("m")</script>.onnx'
    report["notes"] = ["<b>bold</b> & 'quoted'"]
    analysis = copy.deepcopy(inputs["analysis"])
    analysis["original"]["barriers"] = [{"op": "My<Op>", "node": "n&1",
                                         "reason": '<img src=x onerror="alert(1)">'}]
    page = render_html(report, analysis, inputs["profile"])
    assert "<script>" not in page and "<img" not in page and "<b>bold" not in page
    assert "&lt;script&gt;alert(&quot;m&quot;)&lt;/script&gt;.onnx" in page
    assert "&lt;b&gt;bold&lt;/b&gt; &amp; &#x27;quoted&#x27;" in page
    assert "My&lt;Op&gt;" in page and "n&amp;1" in page


def test_barriers_and_their_share_of_macs(run, inputs):
    analysis = copy.deepcopy(inputs["analysis"])
    original = analysis["original"]
    original["prunable_macs"] = original["macs"] * 3 // 4
    original["barriers"] = [{"op": "NonMaxSuppression", "node": "nms_1", "reason": "unknown op"}]
    page = render_html(run[0], analysis, None)
    held = original["macs"] - original["prunable_macs"]
    assert f"{100 * held / original['macs']:.2f}%" in page and human(held) in page
    rows = page.split('id="barriers-table"', 1)[1].split("</table>", 1)[0]
    assert "NonMaxSuppression" in rows and "nms_1" in rows and "unknown op" in rows


def test_every_section_is_optional():
    page = render_html({"model": "m.onnx"})
    parsed = parse(page)
    assert [a["id"] for tag, a in parsed.elements if tag == "section"] == [
        "summary", "layers", "barriers", "latency", "profile"]
    assert "No benchmark" in page and "No per-node profile" in page
    assert "need the analyses of both models" in page
    assert not any(tag == "svg" for tag, _ in parsed.elements)


def test_unknown_and_future_keys_are_rendered(run):
    report = copy.deepcopy(run[0])
    report["finetune"] = {"accuracy": 98.93, "epochs": 2}
    report["evaluation"] = {"held_out": 1000, "correct": 989}
    report["excluded"] = [{"id": "stem-group", "reason": "excluded by --exclude"}]
    report["something_new"] = {"value": 42}
    page = render_html(report)
    assert "Accuracy after fine-tuning" in page and "98.93%" in page
    assert "held_out" in page and "989" in page
    assert "stem-group" in page and "excluded by --exclude" in page
    assert "something_new" in page and "42" in page


def test_missing_matplotlib_is_a_one_line_install_hint(run, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(OnnxPruneError) as raised:
        render_html(run[0])
    assert "pip install" in str(raised.value) and "\n" not in str(raised.value)


def test_write_html_writes_the_page(run, inputs, tmp_path):
    path = tmp_path / "r.html"
    write_html(run[0], path, **inputs)
    text = path.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and 'id="chart-channels"' in text


def test_build_report_inputs_without_the_models(run, tmp_path):
    report = dict(run[0], model=str(tmp_path / "gone.onnx"))
    assert build_report_inputs(report, analyze) == {"analysis": None, "profile": None}
    relative = dict(run[0], model="resnet.onnx", output="pruned.onnx")
    assert build_report_inputs(relative, analyze, base=tmp_path)["analysis"] is None


def test_summary_markdown(run):
    report = copy.deepcopy(run[0])
    report["output"] = "pruned|v2.onnx"
    report["finetune"] = {"accuracy": 98.9}
    report["validation"]["failures"] = ["accuracy drop 0.8 pts exceeds --max-accuracy-drop 0.5"]
    text = summary_markdown(report)
    lines = text.splitlines()
    assert lines[0].startswith("### onnxprune: resnet.onnx → pruned\\|v2.onnx")
    rows = [line for line in lines if line.startswith("| ")]
    header = "| | original | pruned | change |"
    assert rows[0] == header and lines[lines.index(header) + 1] == "|---|---:|---:|---|"
    assert all(row.count(" | ") - row.count("\\| ") >= 3 for row in rows[1:])
    body = "\n".join(rows)
    assert human(report["macs_before"]) in body and human(report["macs_after"]) in body
    assert f"{report['accuracy_after']:.2f}%" in body and "98.90%" in body
    for batch, speed in report["benchmark"]["models"][1]["speedup"].items():
        assert f"{speed['p50']:.2f}×" in body
    assert "**Failed:** accuracy drop 0.8 pts" in text
    assert summary_markdown({}).count("|") == 0


def test_importing_the_report_modules_loads_no_heavy_library():
    import subprocess

    code = ("import sys, onnxprune.htmlreport, onnxprune.runtime.profile; "
            "print(sorted(m for m in ('matplotlib', 'onnxruntime', 'torch') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "[]"
