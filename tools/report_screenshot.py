"""Render the quick-start HTML report and write a PNG screenshot of it (docs/report.png).

Runs the README's quick start (``compress models/resnet.onnx --target 0.5 --data
models/mnist_train.npz --eval-data models/mnist_test.npz --bench``, the defaults otherwise) in a temporary
folder holding copies of those files, so the report names the same relative paths as the README.
It then profiles both models on the CPU at batch 1, renders ``render_html`` and opens the page in
headless Chromium (``onnxprune.htmlreport.browser``), which also checks that the page logs no
error and requests nothing. The screenshot is the whole page at ``--width`` CSS pixels, reduced
to a 256-colour palette so that it stays under ``--max-kb``.

    python tools/report_screenshot.py                       # writes docs/report.png
    python tools/report_screenshot.py --report R.json --html R.html -o shot.png
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from onnxprune.errors import OnnxPruneError  # noqa: E402
from onnxprune.api import analyze  # noqa: E402
from onnxprune.htmlreport import build_report_inputs, render_html  # noqa: E402
from onnxprune.htmlreport.browser import open_page  # noqa: E402

QUICK_START_FILES = ("models/resnet.onnx", "models/mnist_train.npz", "models/mnist_test.npz")


@contextlib.contextmanager
def _inside(folder: Path):
    before = Path.cwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(before)


def quick_start_report(folder: Path) -> dict:
    """The README's quick start run inside ``folder`` (on copies of its input files)."""
    import onnxprune

    for name in QUICK_START_FILES:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ROOT / name, folder / name)
    config = onnxprune.CompressConfig(
        model="models/resnet.onnx", output="resnet_pruned.onnx", target=0.5,
        data="models/mnist_train.npz", eval_data="models/mnist_test.npz",
        report="resnet_pruned.json", bench=True, quiet=True)
    with _inside(folder):
        return onnxprune.compress(config)


def palette_png(png: bytes, colors: int = 256) -> bytes:
    """``png`` reduced to an adaptive palette (Pillow comes with matplotlib); as is without it."""
    try:
        from PIL import Image
    except ImportError:
        return png
    image = Image.open(io.BytesIO(png)).convert("RGB")
    out = io.BytesIO()
    image.quantize(colors=colors, method=Image.Quantize.MEDIANCUT).save(
        out, format="PNG", optimize=True)
    return out.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report", help="an existing compress report (default: run the quick "
                                         "start); its model files are looked up beside it")
    parser.add_argument("-o", "--output", default=str(ROOT / "docs" / "report.png"))
    parser.add_argument("--html", help="also keep the rendered HTML here")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--max-kb", type=int, default=300)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="onnxprune-screenshot-") as tmp:
        folder = Path(tmp)
        if args.report:
            report = json.loads(Path(args.report).read_text(encoding="utf-8"))
            base = Path(args.report).resolve().parent
        else:
            report, base = quick_start_report(folder), folder
        with _inside(base):
            page = render_html(report, **build_report_inputs(report, analyze, base=base))
        html_path = Path(args.html) if args.html else folder / "report.html"
        html_path.write_text(page, encoding="utf-8")
        result = open_page(html_path, args.width, 900, full_page=True)
    problems = result.errors() + [f"request: {u}" for u in result.external_requests()]
    if problems:
        raise OnnxPruneError("the report page misbehaved in chromium: " + "; ".join(problems))
    png = palette_png(result.png)
    if len(png) > args.max_kb * 1024:
        raise OnnxPruneError(f"screenshot is {len(png) // 1024} KB, over --max-kb {args.max_kb}")
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_bytes(png)
    print(f"{args.output}: {len(png) // 1024} KB, {args.width} px wide")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except OnnxPruneError as exc:
        print(f"report_screenshot: {exc}", file=sys.stderr)
        sys.exit(1)
