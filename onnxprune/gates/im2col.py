"""Rows of a Conv input's im2col matrix, gathered for chosen (sample, output position) rows.

Row ``r`` is sample ``r // positions`` at output position ``r % positions`` (row-major over the
output), its columns channel-major then kernel row and column: exactly ``F.unfold``'s matrix
transposed and flattened over the samples. Gathering only the rows a least-squares fit draws
costs rows × fan-in, not (all positions) × fan-in as unfolding the whole batch does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def output_size(x: torch.Tensor, kernel, attrs: dict) -> tuple[int, int]:
    """The (height, width) of the conv's output on input ``x`` (pads included)."""
    pads = list(attrs.get("pads", [0, 0, 0, 0]))
    (sh, sw), (dh, dw) = attrs.get("strides", [1, 1]), attrs.get("dilations", [1, 1])
    height = x.shape[2] + pads[0] + pads[2]
    width = x.shape[3] + pads[1] + pads[3]
    return ((height - dh * (kernel[0] - 1) - 1) // sh + 1,
            (width - dw * (kernel[1] - 1) - 1) // sw + 1)


def conv_rows(x: torch.Tensor, kernel, attrs: dict, rows: torch.Tensor) -> torch.Tensor:
    """[len(rows), C·kh·kw]: the im2col rows ``rows`` of the conv input ``x`` [N, C, H, W]."""
    pads = list(attrs.get("pads", [0, 0, 0, 0]))
    oh, ow = output_size(x, kernel, attrs)
    if any(pads):
        x = F.pad(x, (pads[1], pads[3], pads[0], pads[2]))
    (sh, sw), (dh, dw) = attrs.get("strides", [1, 1]), attrs.get("dilations", [1, 1])
    rows = rows.to(x.device)
    n, p = rows // (oh * ow), rows % (oh * ow)
    h = (p // ow)[:, None] * sh + torch.arange(kernel[0], device=x.device)[None] * dh
    w = (p % ow)[:, None] * sw + torch.arange(kernel[1], device=x.device)[None] * dw
    patches = x[n[:, None, None], :, h[:, :, None], w[:, None, :]]  # [R, kh, kw, C]
    return patches.permute(0, 3, 1, 2).reshape(len(rows), -1)
