"""The HTML report in a real browser: headless Chromium (driven over the DevTools pipe) loads it
without console errors or any request beyond the file itself, renders the SVG charts with their
data-point ids, and takes a non-trivial screenshot. Skipped where no chromium binary exists."""

from __future__ import annotations

import json
import re
import struct

import pytest

import onnxprune
from onnxprune.api import analyze  # noqa: E402
from onnxprune.htmlreport import build_report_inputs, write_html
from onnxprune.htmlreport.browser import find_chromium, open_page

pytestmark = pytest.mark.skipif(
    find_chromium() is None,
    reason="no chromium binary on PATH (Debian: apt-get install chromium fonts-liberation)")

WIDTH, HEIGHT = 1280, 900
CHARTS = ("chart-channels", "chart-macs", "chart-latency", "chart-profile-ops",
          "chart-profile-layers")


@pytest.fixture(scope="module")
def report_page(models_dir, tmp_path_factory):
    """A short l1 compress of the reference ResNet with a benchmark, rendered to report.html."""
    folder = tmp_path_factory.mktemp("browser")
    config = onnxprune.CompressConfig(
        model=str(models_dir / "resnet.onnx"), output=str(folder / "pruned.onnx"), target=0.5,
        data=str(models_dir / "mnist_train.npz"), eval_data=str(models_dir / "mnist_test.npz"),
        report=str(folder / "report.json"), method="l1", calibration_samples=32, round_to=8,
        bench=True, provider="cpu", quiet=True)
    onnxprune.compress(config)
    report = json.loads((folder / "report.json").read_text(encoding="utf-8"))
    inputs = build_report_inputs(report, analyze, base=folder, runs=3)
    path = folder / "report.html"
    write_html(report, path, **inputs)
    return path, report, inputs, open_page(path, WIDTH, HEIGHT, full_page=True)


def _png_size(png: bytes) -> tuple[int, int]:
    assert png[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", png[16:24])


def test_report_loads_without_errors_or_requests(report_page):
    path, _, _, page = report_page
    assert page.errors() == []
    assert page.external_requests() == []
    assert page.failed == []
    assert page.requests == [path.resolve().as_uri()]


def test_rendered_dom_holds_the_charts_and_their_data_points(report_page):
    _, report, inputs, page = report_page
    ids = set(re.findall(r'\bid="([^"]+)"', page.dom))
    for chart in CHARTS:
        assert re.search(rf'<svg[^>]*\bid="{chart}"', page.dom), chart
    assert {f"chart-channels-kept-{i}" for i in range(len(report["groups"]))} <= ids
    rows = inputs["analysis"]["original"]["macs_per_node"]
    assert {f"chart-macs-after-{i}" for i in range(len(rows))} <= ids
    for batch in report["benchmark"]["settings"]["batches"]:
        assert f"chart-latency-p50-m1-b{batch}" in ids
    ops = inputs["profile"]["comparisons"][0]["ops"]
    assert {f"chart-profile-ops-original-{i}" for i in range(len(ops))} <= ids


def test_screenshot_is_a_real_picture(report_page, tmp_path):
    page = report_page[3]
    width, height = _png_size(page.png)
    assert width == WIDTH and height > HEIGHT  # the whole page, taller than the window
    assert len(page.png) > 50_000
    shot = tmp_path / "report.png"
    shot.write_bytes(page.png)
    image = pytest.importorskip("PIL.Image").open(shot).convert("RGB")
    colors = image.getcolors(maxcolors=1 << 20) or []
    assert len(colors) > 50  # text, bars and table shading, not a blank page
    dark = sum(n for n, rgb in colors if sum(rgb) < 200)
    assert dark > 0.002 * width * height  # some text and bars were drawn


def test_the_check_catches_errors_and_external_requests(tmp_path):
    """The same checks flag a page that logs an error and loads a remote image."""
    bad = tmp_path / "bad.html"
    bad.write_text("<!DOCTYPE html><html><body><p>x</p>"
                   "<img src='http://127.0.0.1:9/pixel.png'>"
                   "<script>console.error('boom')</script></body></html>", encoding="utf-8")
    page = open_page(bad, 400, 300)
    assert any("boom" in e for e in page.errors())
    assert "http://127.0.0.1:9/pixel.png" in page.external_requests()
