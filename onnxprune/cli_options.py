"""Options that several commands share, declared once, each parsed by one click type.

A malformed value is click's usage error (``cli`` prints it as one line, exit 2); the commands
receive typed values (tuples of numbers, a ``Preprocessing``) and build their frozen configs.
"""

from __future__ import annotations

import click

from onnxprune.preprocess import CHANNEL_ORDERS, LAYOUTS, PRESETS, Preprocessing

PROVIDERS = ("auto", "cuda", "cpu")


class NumberList(click.ParamType):
    """'1,8,64' -> (1, 8, 64); ``length`` fixes the count; ``positive`` refuses 0 and below."""

    def __init__(self, kind=float, length: int | None = None, positive: bool = False,
                 what: str = "numbers"):
        self.kind, self.length, self.positive, self.what = kind, length, positive, what
        self.name = what

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        text = str(value).replace(" ", "")
        parts = [p for p in text.replace("x", ",").split(",")] if self.length == 2 else text.split(",")
        try:
            values = tuple(self.kind(p) for p in parts if p != "")
        except ValueError:
            self.fail(f"expected {self.what}, got '{value}'", param, ctx)
        if not values or (self.length is not None and len(values) != self.length):
            self.fail(f"expected {self.what}, got '{value}'", param, ctx)
        if self.positive and min(values) <= 0:
            self.fail(f"expected positive {self.what}, got '{value}'", param, ctx)
        return values


class Fraction(click.ParamType):
    """A float in (0, 1] (or [0, 1] with ``closed``)."""

    name = "fraction"

    def __init__(self, closed: bool = False):
        self.closed = closed

    def convert(self, value, param, ctx):
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"expected a number between 0 and 1, got '{value}'", param, ctx)
        if not (0.0 <= number <= 1.0) or (number == 0.0 and not self.closed):
            self.fail(f"expected a number in {'[' if self.closed else '('}0, 1], got '{value}'",
                      param, ctx)
        return number


class MemorySize(click.ParamType):
    """A size in bytes: 512M, 2G, 1000000 (K/M/G/T are powers of 1024)."""

    name = "size"

    def convert(self, value, param, ctx):
        from onnxprune.errors import OnnxPruneError
        from onnxprune.gates.memory import parse_size

        try:
            return parse_size(value)
        except OnnxPruneError as error:
            self.fail(str(error), param, ctx)


class Resize(click.ParamType):
    """'direct' or a positive size of the shorter image side."""

    name = "N|direct"

    def convert(self, value, param, ctx):
        if isinstance(value, int) or str(value).strip().lower() == "direct":
            return value if isinstance(value, int) else "direct"
        try:
            number = int(str(value).strip())
        except ValueError:
            number = 0
        if number < 1:
            self.fail(f"expected a positive size or 'direct', got '{value}'", param, ctx)
        return number


def compose(*decorators):
    def apply(function):
        for decorator in reversed(decorators):
            function = decorator(function)
        return function
    return apply


provider_option = click.option(
    "--provider", type=click.Choice(PROVIDERS), default="auto", show_default=True,
    help="ONNX Runtime execution provider; 'cuda' fails rather than fall back to the CPU.")
threads_option = click.option("--threads", type=click.IntRange(min=1), default=None,
                              help="Intra-op threads (ONNX Runtime's default).")
device_option = click.option(
    "--device", default="auto", show_default=True, metavar="auto|cpu|cuda[:N]",
    help="Torch device of the training steps; auto takes CUDA when torch sees it.")
workers_option = click.option(
    "--workers", type=click.IntRange(min=0), default=0, show_default=True,
    help="Processes (threads for ONNX Runtime validation) that decode data ahead of use; 0 "
         "decodes in the main process. The batches are the same for any count.")
json_option = click.option("--json", "as_json", is_flag=True,
                           help="Print one JSON object (also when a check fails).")
force_option = click.option("--force", is_flag=True, help="Allow overwriting an input file.")

threshold_options = compose(
    click.option("--max-accuracy-drop", type=click.FloatRange(min=0), default=None,
                 help="Fail (exit 1) when top-1 accuracy drops by more than this many "
                      "percentage points."),
    click.option("--min-agreement", type=Fraction(closed=True), default=None,
                 help="Fail (exit 1) when the fraction (0..1) of samples with the same top-1 "
                      "class is below this, e.g. 0.99."),
)

subset_options = compose(
    click.option("--fraction", type=Fraction(), default=None,
                 help="Use this fraction of the data (a fixed-seed subset)."),
    click.option("--limit", type=click.IntRange(min=1), default=None,
                 help="Use at most N samples (a fixed-seed subset)."),
)

preprocessing_options = compose(
    click.option("--preset", type=click.Choice(tuple(PRESETS)), default=None,
                 help="Image folders: named pixel scale/mean/std (imagenet, raw 0..255, "
                      "symmetric [-1,1], caffe BGR; imagenet also resizes to 256/224 of the "
                      "input size and center-crops); the options below override it."),
    click.option("--input-size", type=NumberList(int, 2, True, "H,W"), default=None,
                 help="Image folders: H,W (when the model's size is dynamic)."),
    click.option("--resize", type=Resize(), default=None,
                 help="Image folders: resize the shorter side to N, then center-crop to the "
                      "input size (torchvision's Resize + CenterCrop); 'direct' resizes to the "
                      "input size [imagenet: N = 256/224 of the input size; others: direct]."),
    click.option("--pixel-scale", type=click.FloatRange(min=0, min_open=True), default=None,
                 help="Image folders: factor on 0..255 pixels before mean/std [1/255]; "
                      "1 for models that take raw pixels."),
    click.option("--mean", type=NumberList(float, what="comma-separated numbers"), default=None,
                 help="Image folders: per-channel mean after scaling, e.g. 0.485,0.456,0.406."),
    click.option("--std", type=NumberList(float, positive=True, what="comma-separated numbers"),
                 default=None, help="Image folders: per-channel std, e.g. 0.229,0.224,0.225."),
    click.option("--channel-order", type=click.Choice(CHANNEL_ORDERS), default=None,
                 help="Image folders: the model's channel order [rgb]."),
    click.option("--layout", type=click.Choice(LAYOUTS), default="auto", show_default=True,
                 help="Image folders: the model input's layout (auto reads it off the model "
                      "where unambiguous)."),
    click.option("--classes", type=click.Path(dir_okay=False), default=None,
                 help="Image folders: class names in label order, one a line (or a compress "
                      "report, which records the training folder's classes)."),
)


def _input_shapes(ctx, param, values):
    from onnxprune.errors import OnnxPruneError
    from onnxprune.inputshapes import parse_input_shapes

    try:
        return parse_input_shapes(values) or None
    except OnnxPruneError as exc:
        raise click.BadParameter(exc.message, ctx, param) from None


input_shape_option = click.option(
    "--input-shape", "input_shapes", multiple=True, callback=_input_shapes,
    metavar="NAME:D0,D1,...",
    help="The size to analyse where the model's input dims are dynamic (repeatable; a bare "
         "D0,D1,... names the only input). The pruned model keeps its dynamic dims.")


def preprocessing(params: dict) -> Preprocessing:
    """The ``Preprocessing`` of a command's parsed ``preprocessing_options`` (popped from params)."""
    keys = ("preset", "input_size", "pixel_scale", "mean", "std", "channel_order", "layout",
            "classes", "resize")
    return Preprocessing(**{k: params.pop(k) for k in keys})
