"""The command line: thin click commands, each building a config and calling one API function."""

from __future__ import annotations

import contextlib
import json
import signal
import sys
import threading
import traceback

import click

from onnxprune.cli_options import (NumberList, Fraction, compose, device_option, force_option,
                                   input_shape_option, json_option,
                                   preprocessing, preprocessing_options, provider_option,
                                   subset_options, threads_option, threshold_options,
                                   workers_option, MemorySize)
from onnxprune.errors import EXIT_BAD_INPUT, OnnxPruneError
from onnxprune.finetuning import AUGMENT
from onnxprune.gates.config import (CALIBRATION_SAMPLES, HOLDOUT, METHODS, MIN_EVAL_SAMPLES,
                                     OPTIMIZERS, RECALIBRATION_MODES, REFIT_ROUNDS,
                                     REFIT_WEIGHTINGS)
from onnxprune.gates.config import GateConfig as _GATES

EXIT_INTERNAL = 3


class _Terminated(KeyboardInterrupt):
    """SIGTERM, turned into an exception so that temporary outputs are cleaned up on the way out."""


def _on_sigterm(signum, frame):
    raise _Terminated()


class _Group(click.Group):
    """Prints user errors in one line, internal errors with a traceback and exit code 3.

    Ctrl-C exits 130 and SIGTERM 143, without a traceback; temporary outputs are removed on the
    way out (``graph.save_model`` / ``atomic_write``), so no partial output is left.
    """

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        """Click's usage errors (a bad value, a missing argument) as one line, exit 2."""
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.UsageError as exc:
            where = f"{exc.ctx.info_name}: " if exc.ctx is not None and exc.ctx.parent else ""
            click.echo(f"onnxprune: error: {where}{' '.join(exc.format_message().split())}",
                       err=True)
            code = EXIT_BAD_INPUT
        except click.ClickException as exc:
            click.echo(f"onnxprune: error: {' '.join(exc.format_message().split())}", err=True)
            code = exc.exit_code
        except click.Abort:
            click.echo("onnxprune: aborted", err=True)
            code = 1
        if not standalone_mode:
            return code
        sys.exit(code if isinstance(code, int) else 0)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except OnnxPruneError as exc:
            if ctx.obj and ctx.obj.get("debug"):
                traceback.print_exc()
            click.echo(f"onnxprune: error: {exc.message}", err=True)
            ctx.exit(exc.exit_code)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except KeyboardInterrupt as exc:
            if ctx.obj and ctx.obj.get("debug"):
                traceback.print_exc()
            terminated = isinstance(exc, _Terminated)
            click.echo(f"onnxprune: {'terminated' if terminated else 'interrupted'}", err=True)
            ctx.exit(143 if terminated else 130)
        except Exception:
            traceback.print_exc()
            click.echo("onnxprune: internal error (a bug): please report it with the traceback above",
                       err=True)
            ctx.exit(EXIT_INTERNAL)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks for user errors too.")
@click.version_option(package_name="onnxprune")
@click.pass_context
def main(ctx, debug):
    """onnxprune: structured pruning of ONNX models (AutoBot, with graph-level channel coupling)."""
    ctx.obj = {"debug": debug}
    if not debug:
        # onnx-graphsurgeon prints its warnings (e.g. on bfloat16 weights) to stdout, which would
        # corrupt --json output; show them with --debug only
        from onnx_graphsurgeon.logger import G_LOGGER

        G_LOGGER.severity = G_LOGGER.ERROR
    if threading.current_thread() is threading.main_thread():
        with contextlib.suppress(ValueError, OSError):
            previous = signal.signal(signal.SIGTERM, _on_sigterm)
            ctx.call_on_close(lambda: signal.signal(signal.SIGTERM, previous))


def _print_json(obj) -> None:
    click.echo(json.dumps(obj, indent=2, sort_keys=False))


@main.command()
@click.argument("model", type=click.Path(dir_okay=True))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@input_shape_option
def analyze(model, as_json, input_shapes):
    """Summarize MODEL: I/O, opset, ops, parameters, MACs, channel groups and barriers."""
    from onnxprune import api
    from onnxprune.report import format_analysis

    config = api.AnalyzeConfig(model=model, input_shapes=input_shapes)
    result = api.analyze(config.model, input_shapes=config.input_shapes)
    if as_json:
        _print_json(result)
    else:
        click.echo(format_analysis(result))


# --- validate and bench ---------------------------------------------------------------------


@main.command()
@click.argument("original", type=click.Path(dir_okay=False))
@click.argument("pruned", type=click.Path(dir_okay=False))
@click.option("--data", required=True, type=click.Path(),
              help=".npz with 'x' (preprocessed, model layout) and optional integer 'y', "
                   "or a folder of class sub-folders of images.")
@json_option
@threshold_options
@click.option("--allow-small-eval", is_flag=True,
              help=f"Let thresholds pass on fewer than {MIN_EVAL_SAMPLES} samples.")
@provider_option
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@subset_options
@preprocessing_options
@workers_option
@threads_option
def validate(original, pruned, data, as_json, **params):
    """Run ORIGINAL and PRUNED in ONNX Runtime on the same data and compare them.

    Reports accuracy (with labels), top-1 agreement and per-output error statistics. Exit 0 when
    every threshold holds, 1 when one fails, 2 on bad input.
    """
    from onnxprune import api
    from onnxprune.errors import check_failed
    from onnxprune.runtime.validate import format_validation

    prep = preprocessing(params)
    result = api.validate(api.ValidateConfig(original=original, pruned=pruned, data=data,
                                             preprocessing=prep, **params))
    if as_json:
        _print_json(result)
    else:
        click.echo(format_validation(result))
    if not result["passed"]:
        raise check_failed("; ".join(result["failures"]))


@main.command()
@click.argument("models", nargs=-1, required=True, type=click.Path(dir_okay=False))
@provider_option
@click.option("--batch", "batches", type=NumberList(int, positive=True, what="batch sizes"),
              default="1", show_default=True, help="Batch sizes, e.g. 1,8,64.")
@click.option("--warmup", type=click.IntRange(min=0), default=10, show_default=True)
@click.option("--iterations", type=click.IntRange(min=1), default=None,
              help="Timed runs per model and batch size [default: 50].")
@click.option("--duration", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Instead of --iterations: about S seconds per model and batch size.")
@json_option
@input_shape_option
@click.option("--min-speedup", type=click.FloatRange(min=0), default=None,
              help="Fail (exit 1) when a model's p50 speedup vs the FIRST model is below S.")
@threads_option
def bench(models, as_json, **params):
    """Measure the latency of MODEL(s) in ONNX Runtime; speedups are relative to the first."""
    from onnxprune import api
    from onnxprune.errors import check_failed
    from onnxprune.runtime.bench import format_bench

    result = api.bench(api.BenchConfig(models=tuple(models), **params))
    if as_json:
        _print_json(result)
    else:
        click.echo(format_bench(result))
    if not result["passed"]:
        raise check_failed("; ".join(result["failures"]))


@main.command()
@click.argument("model", type=click.Path(dir_okay=True))
@click.option("--plan", required=True, type=click.Path(dir_okay=True),
              help='JSON plan: {"keep": {"<group id>": [kept channel indices]}}.')
@click.option("-o", "--output", required=True, type=click.Path(), help="Pruned model path.")
@click.option("--masked-reference", type=click.Path(),
              help="Also write the original graph with the removed channels zeroed.")
@force_option
@json_option
@input_shape_option
def prune(model, plan, output, masked_reference, force, as_json, input_shapes):
    """Remove the channels a PLAN does not keep from MODEL (graph surgery)."""
    from onnxprune import api

    config = api.PruneConfig(model=model, plan=plan, output=output,
                             masked_reference=masked_reference, force=force,
                             input_shapes=input_shapes)
    result = api.prune_file(config)
    if as_json:
        _print_json(result)
    else:
        click.echo(f"wrote {result['output']}: MACs {result['macs_before']:,} -> "
                   f"{result['macs_after']:,} "
                   f"({100.0 * result['macs_after'] / max(result['macs_before'], 1):.1f}%)")


html_options = compose(
    click.option("--html", type=click.Path(dir_okay=False),
                 help="Write the self-contained HTML report here (pip install 'onnxprune[report]')."),
    click.option("--summary-md", type=click.Path(dir_okay=False),
                 help="Write the summary as a Markdown table (e.g. $GITHUB_STEP_SUMMARY)."),
)


@main.command()
@click.argument("report_json", metavar="REPORT", type=click.Path(dir_okay=False))
@click.option("-o", "--output", "html", type=click.Path(dir_okay=False),
              help="The HTML file [REPORT with .html].")
@click.option("--summary-md", type=click.Path(dir_okay=False),
              help="Also write the summary as a Markdown table.")
@click.option("--profile/--no-profile", default=True, show_default=True,
              help="Profile both models per node in ONNX Runtime (where the time went).")
@provider_option
@force_option
def report(report_json, html, **params):
    """Render a compress REPORT (JSON) as one self-contained HTML page."""
    from pathlib import Path

    from onnxprune import api

    html = html or str(Path(report_json).with_suffix(".html"))
    written = api.report(api.ReportConfig(report=report_json, html=html, **params))
    for kind, path in written.items():
        click.echo(f"wrote {path}")


class AutoOrCount(click.ParamType):
    """'auto' or a positive integer (a channel multiple, a number of rounds)."""

    name = "auto|N"

    def convert(self, value, param, ctx):
        if str(value).strip().lower() == "auto":
            return "auto"
        try:
            number = int(value)
        except (TypeError, ValueError):
            number = 0
        if number < 1:
            self.fail(f"expected 'auto' or a positive integer, got '{value}'", param, ctx)
        return number


@main.command()
@click.argument("model", type=click.Path(dir_okay=True))
@click.option("--target", default=0.5, show_default=True, type=Fraction(),
              help="Fraction of the original MACs to keep (0.5 keeps half).")
@click.option("--data", type=click.Path(), help=".npz (x, optional y) or a folder of class "
              "sub-folders of images; none: data-free mode.")
@click.option("--eval-data", type=click.Path(),
              help="Held-out data for the figures [a seeded --holdout part of --data].")
@click.option("--holdout", default=HOLDOUT, show_default=True, type=Fraction(),
              help="Without --eval-data: the part of --data held out from training and "
                   "calibration, on which accuracy and agreement are measured.")
@click.option("--allow-small-eval", is_flag=True,
              help=f"Let thresholds pass on fewer than {MIN_EVAL_SAMPLES} evaluation samples.")
@click.option("-o", "--output", type=click.Path(), help="Output model [MODEL_pruned.onnx].")
@click.option("--report", type=click.Path(), help="Write the JSON report here.")
@html_options
@click.option("--method", default="auto", show_default=True, type=click.Choice(METHODS),
              help="autobot: trained gates; refit: channels the least-squares refit can "
                   "rebuild go first (no gate training); auto: refit when --recalibration "
                   "reconstruct runs (the default), autobot otherwise.")
@click.option("--refit-weighting", default=REFIT_WEIGHTINGS[0], show_default=True,
              type=click.Choice(REFIT_WEIGHTINGS),
              help="How refit compares layers: relative: each layer's refit error relative to "
                   "its output; fisher: weighted by the loss' Fisher diagonal (helped deep "
                   "residual nets on validation, hurt shallow ones); auto: both, keeping the "
                   "one closer to the original on held-out samples (twice the time).")
@click.option("--refit-rounds", default=REFIT_ROUNDS, show_default=True, type=AutoOrCount(),
              help="Rounds of the refit selection, each scored on the model pruned so far; "
                   "auto: 3 and 10 (round 1 shared), keeping the one closer to the original "
                   "on held-out samples (12 scorings instead of 3, on ever smaller models).")
@click.option("--beta", default=_GATES.beta, show_default=True, type=float,
              help="Weight of the FLOPs loss.")
@click.option("--gamma", default=_GATES.gamma, show_default=True, type=float,
              help="Weight of the bool loss.")
@click.option("--lr", default=_GATES.lr, show_default=True,
              type=click.FloatRange(min=0, min_open=True), help="Adam learning rate of the gates.")
@click.option("--batch-size", default=_GATES.batch_size, show_default=True,
              type=click.IntRange(min=1))
@click.option("--iterations", default=_GATES.iterations, show_default=True,
              type=click.IntRange(min=1))
@click.option("--seed", default=_GATES.seed, show_default=True, type=int)
@click.option("--recalibrate/--no-recalibrate", default=True, show_default=True,
              help="Correct the layers that read pruned channels.")
@click.option("--recalibration", default=RECALIBRATION_MODES[0], show_default=True,
              type=click.Choice(RECALIBRATION_MODES),
              help="reconstruct: least-squares refit of each layer; stats: match each kept "
                   "channel's mean and std (adaptive BN).")
@click.option("--calibration-samples", default=CALIBRATION_SAMPLES, show_default=True,
              type=click.IntRange(min=1), help="Samples of --data used for the recalibration.")
@click.option("--round-to", default="auto", show_default=True, type=AutoOrCount(),
              help="Kept channels per group in multiples of N; auto: the multiple the "
                   "provider's fast kernels need, for groups wide enough to afford it.")
@click.option("--exclude", multiple=True, metavar="PATTERN",
              help="Keep the channels of these layers whole (node or tensor names, globs; "
                   "repeatable).")
@subset_options
@preprocessing_options
@input_shape_option
@device_option
@click.option("--memory-budget", type=MemorySize(), default=None,
              help="Bytes for cached activations in recalibration and data-free synthesis, "
                   "spilled to a temporary folder past it (512M, 2G) [1/8 of RAM, at most 1G].")
@workers_option
@click.option("--bench", is_flag=True, help="Also benchmark original vs pruned latency.")
@provider_option
@threshold_options
@click.option("--finetune-epochs", default=0, show_default=True, type=click.IntRange(min=0),
              help="After recalibration, fine-tune every weight for E epochs (distillation "
                   "from the original; see 'onnxprune finetune' for the full options).")
@click.option("--finetune-iterations", type=click.IntRange(min=1), default=None,
              help="Instead of --finetune-epochs: this many optimizer steps.")
@click.option("--resume", is_flag=True, help="Continue gate training from OUTPUT.ckpt.npz.")
@force_option
@click.option("--quiet", is_flag=True, help="No progress output.")
@click.option("--progress", is_flag=True,
              help="Progress bars also when stderr is not a terminal (e.g. in CI logs).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def compress(model, output, as_json, **params):
    """Prune MODEL to --target of its MACs (refit scores, AutoBot gates or a baseline)."""
    from pathlib import Path

    from onnxprune import api
    from onnxprune.pipeline import check_thresholds, format_compress

    output = output or str(Path(model).with_name(Path(model).stem + "_pruned.onnx"))
    prep = preprocessing(params)
    params["exclude"] = tuple(params["exclude"])
    config = api.CompressConfig(model=model, output=output, preprocessing=prep, **params)
    result = api.compress(config)
    click.echo(json.dumps(result, indent=2) if as_json else format_compress(result))
    check_thresholds(result)


@main.command()
@click.argument("pruned", type=click.Path(dir_okay=False))
@click.option("--teacher", required=True, type=click.Path(dir_okay=False),
              help="The original (unpruned) model to distil from.")
@click.option("--data", required=True, type=click.Path(),
              help="Training data: .npz (x, optional y) or a folder of class sub-folders.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="The fine-tuned model (same graph, new weights).")
@click.option("--eval-data", type=click.Path(), help="Held-out data for accuracy per epoch.")
@click.option("--report", type=click.Path(dir_okay=False), help="Write the JSON report here.")
@click.option("--epochs", default=1, show_default=True, type=click.IntRange(min=1))
@click.option("--iterations", type=click.IntRange(min=1), default=None,
              help="Instead of --epochs: this many optimizer steps.")
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(min=1),
              help="The global batch (split over torchrun's processes).")
@click.option("--lr", default=0.01, show_default=True, type=click.FloatRange(min=0, min_open=True))
@click.option("--optimizer", default="sgd", show_default=True, type=click.Choice(OPTIMIZERS))
@click.option("--weight-decay", default=5e-4, show_default=True, type=click.FloatRange(min=0))
@click.option("--warmup", default=0.05, show_default=True, type=Fraction(closed=True),
              help="Share of the steps with a linear warm-up before the cosine decay.")
@click.option("--temperature", default=4.0, show_default=True,
              type=click.FloatRange(min=0, min_open=True), help="Distillation temperature.")
@click.option("--alpha", default=0.9, show_default=True, type=Fraction(closed=True),
              help="Weight of the distillation term; 1 - alpha goes to cross-entropy on labels.")
@click.option("--augment", default="auto", show_default=True, type=click.Choice(AUGMENT),
              help="Random flip and crop; auto: for image folders, not for .npz.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--checkpoint-every", default=50, show_default=True, type=click.IntRange(min=1),
              help="Steps between checkpoints (OUTPUT.finetune.ckpt.npz).")
@device_option
@workers_option
@subset_options
@preprocessing_options
@click.option("--resume", is_flag=True, help="Continue from OUTPUT.finetune.ckpt.npz.")
@force_option
@click.option("--quiet", is_flag=True, help="No progress output.")
@click.option("--progress", is_flag=True, help="Progress also when stderr is not a terminal.")
@json_option
def finetune(pruned, as_json, **params):
    """Fine-tune PRUNED (all weights), distilled from --teacher; torchrun for several processes."""
    from onnxprune.finetuning import FinetuneRun, format_finetune, run_finetune

    prep = preprocessing(params)
    result = run_finetune(FinetuneRun(pruned=pruned, preprocessing=prep, **params))
    if _rank() == 0:  # under torchrun only rank 0 reports (and writes)
        click.echo(json.dumps(result, indent=2) if as_json else format_finetune(result))


def _rank() -> int:
    import os

    return int(os.environ.get("RANK", "0"))
