"""The command line: thin click commands, each building a config and calling one API function."""

from __future__ import annotations

import contextlib
import json
import signal
import threading
import traceback

import click

from onnxprune.errors import OnnxPruneError
from onnxprune.gates.config import CALIBRATION_SAMPLES, METHODS, RECALIBRATION_MODES
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
def analyze(model, as_json):
    """Summarize MODEL: I/O, opset, ops, parameters, MACs, channel groups and barriers."""
    from onnxprune import api
    from onnxprune.report import format_analysis

    config = api.AnalyzeConfig(model=model)
    result = api.analyze(config.model)
    if as_json:
        _print_json(result)
    else:
        click.echo(format_analysis(result))


# --- validate and bench ---------------------------------------------------------------------

_PROVIDER = click.Choice(["auto", "cuda", "cpu"])


def _number_list(text, kind, what):
    """Parse '1,8,64' (or '0.485,0.456,0.406') into a tuple; None stays None."""
    if text is None:
        return None
    try:
        values = tuple(kind(v) for v in str(text).replace(" ", "").split(",") if v != "")
    except ValueError:
        raise OnnxPruneError(f"{what} must be a comma-separated list of numbers, got '{text}'") from None
    if not values:
        raise OnnxPruneError(f"{what} is empty")
    return values


@main.command()
@click.argument("original", type=click.Path(dir_okay=False))
@click.argument("pruned", type=click.Path(dir_okay=False))
@click.option("--data", required=True, type=click.Path(),
              help=".npz with 'x' (preprocessed, model layout) and optional integer 'y', "
                   "or a folder of class sub-folders of images.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (also when a check fails).")
@click.option("--max-accuracy-drop", type=float, default=None,
              help="Fail (exit 1) when top-1 accuracy drops by more than this many percentage points.")
@click.option("--min-agreement", type=float, default=None,
              help="Fail (exit 1) when the fraction (0..1) of samples with the same top-1 class "
                   "is below this, e.g. 0.99.")
@click.option("--provider", type=_PROVIDER, default="auto", show_default=True,
              help="Execution provider; 'cuda' fails rather than fall back to the CPU.")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="Use at most N samples (a fixed-seed subset).")
@click.option("--input-size", default=None, help="H,W for image folders when the model's size is dynamic.")
@click.option("--mean", default=None, help="Per-channel mean for image folders, e.g. 0.485,0.456,0.406.")
@click.option("--std", default=None, help="Per-channel std for image folders, e.g. 0.229,0.224,0.225.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="Intra-op threads (ORT default).")
def validate(original, pruned, data, as_json, max_accuracy_drop, min_agreement, provider,
             batch_size, limit, input_size, mean, std, threads):
    """Run ORIGINAL and PRUNED in ONNX Runtime on the same data and compare them.

    Reports accuracy (with labels), top-1 agreement and per-output error statistics. Exit 0 when
    every threshold holds, 1 when one fails, 2 on bad input.
    """
    from onnxprune import api
    from onnxprune.errors import check_failed
    from onnxprune.runtime.validate import format_validation

    size = _number_list(input_size, int, "--input-size")
    if size is not None and len(size) != 2:
        raise OnnxPruneError(f"--input-size must be H,W, got '{input_size}'")
    config = api.ValidateConfig(
        original=original, pruned=pruned, data=data, provider=provider, batch_size=batch_size,
        limit=limit, max_accuracy_drop=max_accuracy_drop, min_agreement=min_agreement,
        input_size=size, mean=_number_list(mean, float, "--mean"),
        std=_number_list(std, float, "--std"), threads=threads,
    )
    result = api.validate(config)
    if as_json:
        _print_json(result)
    else:
        click.echo(format_validation(result))
    if not result["passed"]:
        raise check_failed("; ".join(result["failures"]))


@main.command()
@click.argument("models", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--provider", type=_PROVIDER, default="auto", show_default=True,
              help="Execution provider; 'cuda' fails rather than fall back to the CPU.")
@click.option("--batch", "batch", default="1", show_default=True, help="Batch sizes, e.g. 1,8,64.")
@click.option("--warmup", type=click.IntRange(min=0), default=10, show_default=True)
@click.option("--iterations", type=click.IntRange(min=1), default=None,
              help="Timed runs per model and batch size [default: 50].")
@click.option("--duration", type=float, default=None,
              help="Instead of --iterations: about S seconds per model and batch size.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (also when the gate fails).")
@click.option("--min-speedup", type=float, default=None,
              help="Fail (exit 1) when a model's p50 speedup vs the FIRST model is below S.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="Intra-op threads (ORT default).")
def bench(models, provider, batch, warmup, iterations, duration, as_json, min_speedup, threads):
    """Measure the latency of MODEL(s) in ONNX Runtime; speedups are relative to the first."""
    from onnxprune import api
    from onnxprune.errors import check_failed
    from onnxprune.runtime.bench import format_bench

    config = api.BenchConfig(
        models=tuple(models), provider=provider, batches=_number_list(batch, int, "--batch"),
        warmup=warmup, iterations=iterations, duration=duration, threads=threads,
        min_speedup=min_speedup,
    )
    result = api.bench(config)
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
@click.option("--force", is_flag=True, help="Allow overwriting an input file.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def prune(model, plan, output, masked_reference, force, as_json):
    """Remove the channels a PLAN does not keep from MODEL (graph surgery)."""
    from onnxprune import api

    config = api.PruneConfig(model=model, plan=plan, output=output,
                             masked_reference=masked_reference, force=force)
    result = api.prune_file(config)
    if as_json:
        _print_json(result)
    else:
        click.echo(f"wrote {result['output']}: MACs {result['macs_before']:,} -> "
                   f"{result['macs_after']:,} "
                   f"({100.0 * result['macs_after'] / max(result['macs_before'], 1):.1f}%)")


def _floats(text):
    return tuple(float(v) for v in text.split(",")) if text else None


def _size(text):
    if not text:
        return None
    parts = [int(v) for v in text.lower().replace("x", ",").split(",")]
    return (parts[0], parts[-1])


@main.command()
@click.argument("model", type=click.Path(dir_okay=True))
@click.option("--target", default=0.5, show_default=True, type=float,
              help="Fraction of the original MACs to keep (0.5 keeps half).")
@click.option("--data", type=click.Path(), help=".npz (x, optional y) or a folder of class "
              "sub-folders of images; none: data-free mode.")
@click.option("--eval-data", type=click.Path(), help="Held-out data for accuracy before/after.")
@click.option("-o", "--output", type=click.Path(), help="Output model [MODEL_pruned.onnx].")
@click.option("--report", type=click.Path(), help="Write the JSON report here.")
@click.option("--method", default="autobot", show_default=True,
              type=click.Choice(METHODS))
@click.option("--beta", default=_GATES.beta, show_default=True, help="Weight of the FLOPs loss.")
@click.option("--gamma", default=_GATES.gamma, show_default=True, help="Weight of the bool loss.")
@click.option("--lr", default=_GATES.lr, show_default=True, help="Adam learning rate of the gates.")
@click.option("--batch-size", default=_GATES.batch_size, show_default=True)
@click.option("--iterations", default=_GATES.iterations, show_default=True)
@click.option("--seed", default=_GATES.seed, show_default=True)
@click.option("--recalibrate/--no-recalibrate", default=True, show_default=True,
              help="Correct the layers that read pruned channels.")
@click.option("--recalibration", default=RECALIBRATION_MODES[0], show_default=True,
              type=click.Choice(RECALIBRATION_MODES),
              help="reconstruct: least-squares refit of each layer; stats: match each kept "
                   "channel's mean and std (adaptive BN).")
@click.option("--calibration-samples", default=CALIBRATION_SAMPLES, show_default=True,
              help="Samples of --data used for the recalibration.")
@click.option("--round-to", default=1, show_default=True,
              help="Kept channels per group in multiples of N.")
@click.option("--fraction", type=float, help="Use this fraction of --data.")
@click.option("--limit", type=int, help="Use at most this many samples of --data.")
@click.option("--input-size", help="Image folders: H,W.")
@click.option("--mean", help="Image folders: per-channel mean, comma-separated.")
@click.option("--std", help="Image folders: per-channel std, comma-separated.")
@click.option("--bench", is_flag=True, help="Also benchmark original vs pruned latency.")
@click.option("--provider", default="auto", show_default=True,
              type=click.Choice(["auto", "cuda", "cpu"]))
@click.option("--max-accuracy-drop", type=float, help="Exit 1 if accuracy drops more (points).")
@click.option("--min-agreement", type=float, help="Exit 1 if top-1 agreement is lower (0..1).")
@click.option("--resume", is_flag=True, help="Continue gate training from OUTPUT.ckpt.npz.")
@click.option("--force", is_flag=True, help="Allow overwriting an input file.")
@click.option("--quiet", is_flag=True, help="No progress output.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def compress(model, target, data, eval_data, output, report, method, beta, gamma, lr, batch_size,
             iterations, seed, recalibrate, recalibration, calibration_samples, round_to,
             fraction, limit, input_size, mean, std, bench, provider, max_accuracy_drop,
             min_agreement, resume, force, quiet, as_json):
    """Prune MODEL to --target of its MACs with AutoBot gates (or a baseline)."""
    from pathlib import Path

    from onnxprune import api
    from onnxprune.pipeline import CompressConfig, check_thresholds, format_compress

    output = output or str(Path(model).with_name(Path(model).stem + "_pruned.onnx"))
    config = CompressConfig(
        model=model, output=output, target=target, data=data, eval_data=eval_data,
        report=report, method=method, beta=beta, gamma=gamma, lr=lr, batch_size=batch_size,
        iterations=iterations, seed=seed, recalibrate=recalibrate, recalibration=recalibration,
        calibration_samples=calibration_samples, round_to=round_to,
        fraction=fraction, limit=limit, input_size=_size(input_size), mean=_floats(mean),
        std=_floats(std), bench=bench, provider=provider, resume=resume, force=force,
        quiet=quiet, max_accuracy_drop=max_accuracy_drop, min_agreement=min_agreement)
    result = api.compress(config)
    click.echo(json.dumps(result, indent=2) if as_json else format_compress(result))
    check_thresholds(result)
