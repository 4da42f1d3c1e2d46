"""The command line: thin click commands, each building a config and calling one API function."""

from __future__ import annotations

import json
import sys
import traceback

import click

from onnxprune.errors import OnnxPruneError

EXIT_INTERNAL = 3


class _Group(click.Group):
    """Prints user errors in one line, internal errors with a traceback and exit code 3."""

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
        except KeyboardInterrupt:
            click.echo("onnxprune: interrupted", err=True)
            ctx.exit(130)
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
