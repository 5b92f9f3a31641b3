"""A small ONNX → torch converter for frozen feed-forward CNN graphs (inference semantics).

It covers exactly the op types of the SFace graph (opset 11): Conv, BatchNormalization, PRelu,
Sub, Mul, Dropout, Flatten, Gemm; any other op, or an attribute value it does not implement,
raises `MissingWeights` at construction (the file is not the kind we expect) rather than computing
something wrong. The result is an `nn.Module` whose forward runs the graph node by node with torch
ops, so gradients flow to the input.

Weights become non-persistent buffers: they move with `.to(device)`, never appear in
`.parameters()` (an optimiser cannot pick them up) and never in `state_dict()` (a training
checkpoint does not embed third-party weights). BatchNormalization always uses its running
statistics and Dropout is the identity, whatever `.train()` says: this is a frozen feature extractor.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from reenact.errors import MissingWeights

__all__ = ["SUPPORTED_OPS", "OnnxGraphModule"]


@dataclass(frozen=True)
class _Node:
    op: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attrs: dict[str, Any]


class OnnxGraphModule(nn.Module):
    """Runs a single-input, single-output ONNX graph with torch ops.

    Args (keyword-only):
        model: an `onnx.ModelProto` (already loaded and checked by the caller).
    Raises:
        MissingWeights: unsupported op/attribute, or more than one graph input/output.
    """

    def __init__(self, *, model: Any) -> None:
        super().__init__()
        from onnx import helper, numpy_helper  # onnx is only needed to build

        graph = model.graph
        self._buffer_of: dict[str, str] = {}
        for i, init in enumerate(graph.initializer):
            array = np.array(numpy_helper.to_array(init), copy=True)
            self.register_buffer(f"w{i}", torch.from_numpy(array), persistent=False)
            self._buffer_of[init.name] = f"w{i}"
        inputs = [v.name for v in graph.input if v.name not in self._buffer_of]
        if len(inputs) != 1 or len(graph.output) != 1:
            raise MissingWeights(f"expected a 1-input 1-output graph, got inputs {inputs} and "
                                 f"{len(graph.output)} outputs")
        self.input_name, self.output_name = inputs[0], graph.output[0].name
        self._nodes = tuple(
            _Node(n.op_type, tuple(n.input), tuple(n.output),
                  {a.name: helper.get_attribute_value(a) for a in n.attribute})
            for n in graph.node
        )
        for node in self._nodes:
            _check_supported(node)
        # Index of the last node reading each activation, so forward can drop it early (peak memory).
        self._free_after: dict[int, tuple[str, ...]] = {}
        last_use = {name: i for i, node in enumerate(self._nodes) for name in node.inputs}
        for name, i in last_use.items():
            if name not in self._buffer_of and name != self.output_name:
                self._free_after[i] = (*self._free_after.get(i, ()), name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: the graph input (e.g. N×3×112×112 float32) → the graph output tensor."""
        env: dict[str, torch.Tensor] = {self.input_name: x}
        for i, node in enumerate(self._nodes):
            args = [self._value(name, env) for name in node.inputs if name]
            env[node.outputs[0]] = SUPPORTED_OPS[node.op](args, node.attrs)
            for name in self._free_after.get(i, ()):
                env.pop(name, None)
        return env[self.output_name]

    def _value(self, name: str, env: dict[str, torch.Tensor]) -> torch.Tensor:
        if name in env:
            return env[name]
        return getattr(self, self._buffer_of[name])


def _check_supported(node: _Node) -> None:
    if node.op not in SUPPORTED_OPS:
        raise MissingWeights(f"ONNX op {node.op} is not supported by the torch rebuild",
                             f"supported: {', '.join(sorted(SUPPORTED_OPS))}")
    a = node.attrs
    bad = (
        (node.op == "Conv" and a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"))
        or (node.op == "Conv" and len(a.get("kernel_shape", [0, 0])) != 2)
        or (node.op == "Gemm" and a.get("transA", 0) != 0)
        or (node.op == "BatchNormalization" and a.get("training_mode", 0) != 0)
    )
    if bad:
        raise MissingWeights(f"ONNX {node.op} with attributes {a} is not supported by the torch rebuild")


def _conv(args: list[torch.Tensor], a: dict[str, Any]) -> torch.Tensor:
    x, w, *b = args
    pads = list(a.get("pads", [0, 0, 0, 0]))  # [top, left, bottom, right]
    if pads[:2] != pads[2:]:
        x = F.pad(x, (pads[1], pads[3], pads[0], pads[2]))
        pads = [0, 0, 0, 0]
    return F.conv2d(x, w, b[0] if b else None, stride=tuple(a.get("strides", [1, 1])),
                    padding=(pads[0], pads[1]), dilation=tuple(a.get("dilations", [1, 1])),
                    groups=int(a.get("group", 1)))


def _batch_norm(args: list[torch.Tensor], a: dict[str, Any]) -> torch.Tensor:
    x, gamma, beta, mean, var = args
    return F.batch_norm(x, mean, var, gamma, beta, training=False, eps=float(a.get("epsilon", 1e-5)))


def _prelu(args: list[torch.Tensor], a: dict[str, Any]) -> torch.Tensor:
    x, slope = args
    if x.dim() >= 2 and slope.numel() == x.shape[1] and slope.dim() == x.dim() - 1:
        return F.prelu(x, slope.reshape(-1))  # per-channel slope stored as C×1×1
    return torch.where(x >= 0, x, x * slope)  # general ONNX broadcasting


def _flatten(args: list[torch.Tensor], a: dict[str, Any]) -> torch.Tensor:
    (x,) = args
    axis = int(a.get("axis", 1)) % max(x.dim(), 1)
    return x.reshape(math.prod(x.shape[:axis]), -1)


def _gemm(args: list[torch.Tensor], a: dict[str, Any]) -> torch.Tensor:
    x, w, *c = args
    w = w.t() if a.get("transB", 0) else w
    y = float(a.get("alpha", 1.0)) * (x @ w)
    return y + float(a.get("beta", 1.0)) * c[0] if c else y


SUPPORTED_OPS: dict[str, Callable[[list[torch.Tensor], dict[str, Any]], torch.Tensor]] = {
    "Conv": _conv,
    "BatchNormalization": _batch_norm,
    "PRelu": _prelu,
    "Sub": lambda args, a: args[0] - args[1],
    "Mul": lambda args, a: args[0] * args[1],
    "Dropout": lambda args, a: args[0],  # inference: identity
    "Flatten": _flatten,
    "Gemm": _gemm,
}
