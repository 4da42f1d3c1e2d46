"""``--input-shape NAME:D0,D1,...``: the sizes used for shape inference where a model's are dynamic.

``parse_input_shapes`` reads the CLI syntax (repeatable; a bare ``D0,D1,...`` names the model's
only input). The shapes only ever change a copy made for inference: a pruned model keeps the
original's declared dynamic dims.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from onnxprune.errors import OnnxPruneError

InputShapes = dict[str, tuple[int, ...]]
ONLY_INPUT = ""  # the key of a bare shape: the model's one real input


def parse_input_shapes(values: Iterable[str] | str | None,
                       input_names: Sequence[str] | None = None) -> InputShapes:
    """``("images:1,3,320,320", ...)`` as ``{"images": (1, 3, 320, 320)}``.

    A bare ``1,3,320,320`` is allowed once; with ``input_names`` it names the only input (more
    inputs: an error), without them it is kept under the key ``""`` until a model resolves it.
    The name is what precedes the last ``:``, so TF-style names such as ``input_1:0`` work.
    """
    if values is None:
        return {}
    if isinstance(values, str):
        values = (values,)
    shapes: InputShapes = {}
    for text in values:
        name, dims = _split(str(text))
        if name in shapes:
            what = f"input '{name}'" if name else "a bare shape"
            raise OnnxPruneError(f"--input-shape: {what} is given twice")
        shapes[name] = dims
    return resolve_names(shapes, input_names) if input_names is not None else shapes


def _split(text: str) -> tuple[str, tuple[int, ...]]:
    text = text.strip()
    name, sep, dims_text = text.rpartition(":")
    if not sep:
        name, dims_text = ONLY_INPUT, text
    elif not name.strip():
        raise OnnxPruneError(f"--input-shape '{text}': empty input name before ':' "
                             f"(expected NAME:D0,D1,...)")
    parts = [p.strip() for p in dims_text.replace("x", ",").split(",")] if dims_text.strip() \
        else []
    if not parts:
        raise OnnxPruneError(f"--input-shape '{text}': no dimensions (expected NAME:D0,D1,...)")
    dims = []
    for part in parts:
        if not part.isdigit() or int(part) <= 0:
            raise OnnxPruneError(f"--input-shape '{text}': dimension '{part}' is not a positive "
                                 f"integer (expected NAME:D0,D1,... such as images:1,3,640,640)")
        dims.append(int(part))
    return name.strip(), tuple(dims)


def resolve_names(shapes: Mapping[str, Sequence[int]] | None,
                  input_names: Sequence[str]) -> InputShapes:
    """``shapes`` with a bare entry named after the only input; unknown names refused."""
    resolved: InputShapes = {}
    for name, dims in (shapes or {}).items():
        if name == ONLY_INPUT:
            if len(input_names) != 1:
                raise OnnxPruneError(
                    f"--input-shape {','.join(map(str, dims))}: the model has {len(input_names)} "
                    f"inputs ({', '.join(input_names)}); name one as NAME:D0,D1,...")
            name = input_names[0]
        elif name not in input_names:
            raise OnnxPruneError(f"--input-shape names '{name}', which is not an input of the "
                                 f"model (inputs: {', '.join(input_names)})")
        if name in resolved:
            raise OnnxPruneError(f"--input-shape: input '{name}' is given twice")
        resolved[name] = tuple(int(d) for d in dims)
    return resolved
