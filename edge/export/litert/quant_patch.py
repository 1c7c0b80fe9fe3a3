"""A PT2E quantizer that makes the Net1D graph full-integer (edge-net1d-notes.md, section 4).

The stock litert-torch 0.10 ``PT2EQuantizer`` leaves three things float or coarse for Net1D:

1. residual ADDs: its add annotator matches source partitions of ``operator.add``/``torch.add``
   only, but torch 2.13's non-strict export records ``x += y`` as the string ``'add'``, so the
   adds stay float (float islands, a float output, and a LOGISTIC with scale 1/255 that
   tflite-runtime refuses). Fix: annotate every two-tensor ``aten.add.Tensor`` directly.
2. zero ``F.pad`` (max-pool shortcut padding, channel expansion, the input pad): no annotator.
   Fix: share the input's quantisation parameters (exact: 0.0 maps to the zero point), or give
   the input a fresh observer when it has none (the model input). The pads are annotated
   before and after ``max_pool2d`` because a max-pool only gets annotated when its input is,
   and the channel pad takes a max-pool's output.
3. the embedding: ``propagate_annotation`` makes the final ``mean`` share its input's scale
   (the last block's range, about [-1.5, 10.5]), far too coarse for an embedding whose
   per-dimension spread is about 0.06. Fix: the final mean gets its own output observer (the
   int8 export pools with a depthwise conv, to2d.MeanPool, which has one anyway).
"""

from __future__ import annotations

import torch
from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer
from litert_torch.quantize.pt2e_quantizer_utils import (
    OP_TO_ANNOTATOR,
    get_input_act_qspec,
    get_output_act_qspec,
    propagate_annotation,
)
from torch.fx import GraphModule, Node
from torchao.quantization.pt2e.quantizer import QuantizationAnnotation, SharedQuantizationSpec

aten = torch.ops.aten
PAD_OPS = (aten.constant_pad_nd.default, aten.pad.default)
MEAN_OPS = (aten.mean.dim, aten.mean.default)


def _annotated(node: Node) -> bool:
    a = node.meta.get("quantization_annotation")
    return bool(a is not None and a._annotated)


def _has_output_qspec(node: Node) -> bool:
    a = node.meta.get("quantization_annotation")
    return bool(a is not None and a._annotated and a.output_qspec is not None)


def annotate_adds(gm: GraphModule, config) -> None:
    for n in gm.graph.nodes:
        if n.op != "call_function" or n.target != aten.add.Tensor or _annotated(n):
            continue
        a, b = n.args[0], n.args[1]
        if not (isinstance(a, Node) and isinstance(b, Node)):
            continue
        n.meta["quantization_annotation"] = QuantizationAnnotation(
            input_qspec_map={a: get_input_act_qspec(config), b: get_input_act_qspec(config)},
            output_qspec=get_output_act_qspec(config),
            _annotated=True,
        )


def _is_zero_pad(n: Node) -> bool:
    if n.op != "call_function" or n.target not in PAD_OPS:
        return False
    if n.target == aten.pad.default:
        mode = n.args[2] if len(n.args) > 2 else n.kwargs.get("mode", "constant")
        if mode != "constant":
            return False
        value = n.args[3] if len(n.args) > 3 else n.kwargs.get("value", None)
    else:
        value = n.args[2] if len(n.args) > 2 else n.kwargs.get("value", 0)
    return value in (None, 0, 0.0)


def annotate_zero_pads(gm: GraphModule, config) -> None:
    for n in gm.graph.nodes:
        if not _is_zero_pad(n) or _annotated(n):
            continue
        x = n.args[0]
        if _has_output_qspec(x):
            shared = SharedQuantizationSpec(x)
            n.meta["quantization_annotation"] = QuantizationAnnotation(
                input_qspec_map={x: shared}, output_qspec=shared, _annotated=True)
        elif x.op == "placeholder":
            n.meta["quantization_annotation"] = QuantizationAnnotation(
                input_qspec_map={x: get_input_act_qspec(config)},
                output_qspec=SharedQuantizationSpec((x, n)), _annotated=True)


def annotate_final_mean(gm: GraphModule, config) -> None:
    """Own observer on the mean that produces the model output (through views, if any). A
    pooling conv (to2d.MeanPool) has its own output observer already, as every conv does."""
    out = next(n for n in gm.graph.nodes if n.op == "output")
    node = out.args[0][0] if isinstance(out.args[0], (tuple, list)) else out.args[0]
    while node.op == "call_function" and node.target not in MEAN_OPS and len(node.all_input_nodes) == 1:
        node = node.all_input_nodes[0]
    if node.op == "call_function" and node.target == aten.conv2d.default:
        return
    if node.op != "call_function" or node.target not in MEAN_OPS:
        raise RuntimeError("quant_patch: the model output is not produced by a mean (pooled embedding)")
    x = node.args[0]
    node.meta["quantization_annotation"] = QuantizationAnnotation(
        input_qspec_map={x: SharedQuantizationSpec(x)} if _has_output_qspec(x) else {x: get_input_act_qspec(config)},
        output_qspec=get_output_act_qspec(config),
        _annotated=True,
    )


def share_cat_scales(gm: GraphModule) -> None:
    """One quantisation for a channel ``cat``, its inputs and its consumers' reading of it (the
    sliced conv + Swish of to2d.SplitConvSwish): every slice is written with the first slice's
    observer, and the ops reading the cat take its output as it is. Otherwise the converter
    requantises the other slices and the cat's output (a QUANTIZE op and a second full-size live
    tensor, which costs more TFLM arena than the slicing saves)."""
    for n in gm.graph.nodes:
        if n.op != "call_function" or n.target != aten.cat.default:
            continue
        first, *rest = n.args[0]
        if not _has_output_qspec(first):
            continue
        shared = SharedQuantizationSpec(first)
        for x in rest:
            if _has_output_qspec(x):
                x.meta["quantization_annotation"].output_qspec = shared
        n.meta["quantization_annotation"] = QuantizationAnnotation(
            input_qspec_map={x: shared for x in n.args[0]}, output_qspec=shared, _annotated=True)
        _read_as(n, n)
        for user in n.users:  # the shortcut's max-pool keeps the cat's scale; so must the add reading it
            if user.op == "call_function" and user.target == aten.max_pool2d.default:
                _read_as(user, n)


def _read_as(n: Node, source: Node) -> None:
    """The annotated consumers of ``n`` read it with ``source``'s quantisation (no requantise)."""
    for user in n.users:
        a = user.meta.get("quantization_annotation")
        if a is not None and a._annotated and n in a.input_qspec_map:
            a.input_qspec_map[n] = SharedQuantizationSpec(source)


class FullIntegerQuantizer(PT2EQuantizer):
    """``PT2EQuantizer`` + the three fixes above (global config only)."""

    def annotate(self, model: GraphModule) -> GraphModule:
        config = self.global_config
        annotate_adds(model, config)
        model = self._annotate_for_static_quantization_config(model)
        for _ in range(2):
            annotate_zero_pads(model, config)
            OP_TO_ANNOTATOR["max_pool2d"](model, config, None)
            OP_TO_ANNOTATOR["fixed_qparams"](model, config, None)
            OP_TO_ANNOTATOR["mul"](model, config, None)
        annotate_final_mean(model, config)
        share_cat_scales(model)
        propagate_annotation(model)
        return model
