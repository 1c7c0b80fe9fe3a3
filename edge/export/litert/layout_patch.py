"""Let litert-torch's NHWC layout pass keep zero pads in NHWC (edge-net1d-notes.md, section 4.4).

The pass (``optimize_layout_transposes_pass``, a private litert-torch 0.10 API) has no NHWC
rewriter for ``constant_pad_nd``, so every pad ran in NCHW between two TRANSPOSEs (43 in the
int8 graph). A pad is layout-agnostic once its pad list is permuted: torch lists pads from
the last dimension backwards, so NCHW ``(w0, w1, h0, h1, c0, c1, n0, n1)`` becomes, for an
NHWC tensor, ``(c0, c1, w0, w1, h0, h1, n0, n1)``. Registering that rewriter is all it takes.
"""

from __future__ import annotations

import torch

aten = torch.ops.aten


def _nhwc_pad_list(pad: list[int]) -> list[int]:
    p = list(pad) + [0] * (8 - len(pad))
    w, h, c, n = p[0:2], p[2:4], p[4:6], p[6:8]
    out = c + w + h + n
    while len(out) > 2 and out[-2:] == [0, 0]:
        out = out[:-2]
    return out


def install() -> None:
    """Register the NHWC pad rewriter (idempotent)."""
    from litert_torch._convert.fx_passes.optimize_layout_transposes_pass import layout_rewrite

    def rewrite(node: torch.fx.Node) -> None:
        args = list(node.args)
        args[1] = _nhwc_pad_list(args[1])
        node.args = tuple(args)

    for op in (aten.constant_pad_nd.default,):
        if op not in layout_rewrite.rewriters:
            layout_rewrite.rewriters[op] = rewrite
