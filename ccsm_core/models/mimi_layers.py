"""Mimi building blocks (moshi 0.2.2): causal convolutions, SEANet, weight fetching.

Every layer has a batch form ``layer(be, x)`` and a streaming form ``layer.step(be, x, state)``
with ``state = layer.new_state(be)``. Convolution inputs are channel-major ``[C, T]``.
Streaming state lives in backend buffers (``be.zeros`` + ``be.write``); each buffer is read
before it is rewritten, in op-creation order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import FormatError
from ..tensors import float32_values

Tensor = Any


class Weights:
    """Fetches named tensors from a mapping, checking presence and shape (``FormatError``)."""

    def __init__(self, be: Any, tensors: Mapping[str, Any], where: str = "Mimi weights") -> None:
        self.be, self.tensors, self.where = be, tensors, where

    def _raw(self, name: str, shape: Sequence[int]) -> Any:
        try:
            t = self.tensors[name]
        except KeyError:
            raise FormatError(
                f"{self.where}: tensor {name!r} is missing", "the file is not a complete moshi Mimi checkpoint"
            ) from None
        got = tuple(int(d) for d in t.shape)
        if got != tuple(shape):
            raise FormatError(
                f"{self.where}: tensor {name!r} has shape {list(got)}, expected {list(shape)}",
                "the weights do not match the Mimi config",
            )
        return t

    def host(self, name: str, shape: Sequence[int]) -> np.ndarray:
        """The tensor as a float32 NumPy array."""
        return float32_values(self._raw(name, shape)).reshape(tuple(shape))

    def get(self, name: str, shape: Sequence[int]) -> Tensor:
        """The tensor as a backend weight."""
        return self.be.weight(self._raw(name, shape))


def extra_padding(length: int, k_eff: int, stride: int, pad_total: int) -> int:
    """Right padding so the last conv window is full (moshi ``get_extra_padding_for_conv1d``)."""
    n = length - k_eff + pad_total
    frames = -(-n // stride) + 1  # ceil(n / stride) + 1
    return (frames - 1) * stride + (k_eff - pad_total) - length


@dataclass
class _ConvState:
    buf: Tensor
    first: bool = True


class CausalConv1d:
    """moshi ``StreamingConv1d`` (causal): left pad ``k_eff - stride``, right pad to a full window."""

    def __init__(
        self,
        w: Tensor,
        b: Tensor | None,
        cin: int,
        k: int,
        stride: int = 1,
        dilation: int = 1,
        pad_mode: str = "constant",
    ) -> None:
        self.w, self.b, self.cin, self.k = w, b, cin, k
        self.stride, self.dilation, self.pad_mode = stride, dilation, pad_mode
        self.k_eff = (k - 1) * dilation + 1
        self.pad_total = self.k_eff - stride

    @classmethod
    def load(
        cls,
        ws: Weights,
        prefix: str,
        cin: int,
        cout: int,
        k: int,
        stride: int = 1,
        dilation: int = 1,
        bias: bool = True,
        pad_mode: str = "constant",
    ) -> CausalConv1d:
        w = ws.get(prefix + ".weight", (cout, cin, k))
        b = ws.get(prefix + ".bias", (cout,)) if bias else None
        return cls(w, b, cin, k, stride, dilation, pad_mode)

    def _conv(self, be: Any, x: Tensor) -> Tensor:
        return be.conv1d(x, self.w, self.b, stride=self.stride, dilation=self.dilation)

    def __call__(self, be: Any, x: Tensor) -> Tensor:
        extra = extra_padding(be.shape(x)[1], self.k_eff, self.stride, self.pad_total)
        return self._conv(be, be.pad(x, 1, self.pad_total, extra, self.pad_mode))

    def new_state(self, be: Any) -> _ConvState:
        return _ConvState(be.zeros((self.cin, self.pad_total)) if self.pad_total else None)

    def step(self, be: Any, x: Tensor, st: _ConvState) -> Tensor:
        """Consume ``T`` samples (a multiple of the stride), return ``T / stride`` outputs."""
        tp = self.pad_total
        if tp:
            prev = st.buf
            if st.first and self.pad_mode == "replicate":
                prev = be.pad(be.slice(x, 1, 0, 1), 1, tp - 1, 0, "replicate")
            x = be.concat([prev, x], 1)
            n = be.shape(x)[1]
            st.buf = be.write(st.buf, be.slice(x, 1, n - tp, n), 0, axis=1)
        st.first = False
        return self._conv(be, x)


@dataclass
class _ConvTrState:
    partial: Tensor


class CausalConvTranspose1d:
    """moshi ``StreamingConvTranspose1d`` (causal): trim all ``k - stride`` samples on the right."""

    def __init__(
        self, w: Tensor, b: Tensor | None, neg_b: Tensor | None, cout: int, k: int, stride: int, groups: int = 1
    ) -> None:
        self.w, self.b, self.neg_b, self.cout, self.k = w, b, neg_b, cout, k
        self.stride, self.groups = stride, groups
        self.pad_total = k - stride

    @classmethod
    def load(
        cls, ws: Weights, prefix: str, cin: int, cout: int, k: int, stride: int, groups: int = 1, bias: bool = True
    ) -> CausalConvTranspose1d:
        w = ws.get(prefix + ".weight", (cin, cout // groups, k))
        b = neg_b = None
        if bias:
            b = ws.get(prefix + ".bias", (cout,))
            neg_b = ws.be.weight(-ws.host(prefix + ".bias", (cout,)).reshape(cout, 1))
        return cls(w, b, neg_b, cout, k, stride, groups)

    def _convtr(self, be: Any, x: Tensor) -> Tensor:
        return be.conv_transpose1d(x, self.w, self.b, stride=self.stride, groups=self.groups)

    def __call__(self, be: Any, x: Tensor) -> Tensor:
        n = be.shape(x)[1] * self.stride
        return be.slice(self._convtr(be, x), 1, 0, n)

    def new_state(self, be: Any) -> _ConvTrState:
        return _ConvTrState(be.zeros((self.cout, self.pad_total)))

    def step(self, be: Any, x: Tensor, st: _ConvTrState) -> Tensor:
        """Overlap-add: the previous tail (bias removed) is added to the head of this output."""
        n = be.shape(x)[1] * self.stride
        tp = self.pad_total
        y = self._convtr(be, x)  # [cout, n + tp]
        z = be.concat([be.add(be.slice(y, 1, 0, tp), st.partial), be.slice(y, 1, tp, n + tp)], 1)
        tail = be.slice(z, 1, n, n + tp)
        if self.neg_b is not None:
            tail = be.add(tail, self.neg_b)
        st.partial = be.write(st.partial, tail, 0, axis=1)
        return be.slice(z, 1, 0, n)


class Elu:
    """ELU(alpha 1.0), stateless."""

    def __call__(self, be: Any, x: Tensor) -> Tensor:
        return be.elu(x, 1.0)

    def new_state(self, be: Any) -> None:
        return None

    def step(self, be: Any, x: Tensor, st: None) -> Tensor:
        return be.elu(x, 1.0)


class Sequential:
    """Layers applied in order; the state is the list of the layers' states."""

    def __init__(self, layers: Sequence[Any]) -> None:
        self.layers = list(layers)

    def __call__(self, be: Any, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(be, x)
        return x

    def new_state(self, be: Any) -> list:
        return [layer.new_state(be) for layer in self.layers]

    def step(self, be: Any, x: Tensor, st: list) -> Tensor:
        for layer, s in zip(self.layers, st):
            x = layer.step(be, x, s)
        return x


class ResBlock(Sequential):
    """SEANet residual block with identity skip: ``x + conv1(ELU(conv_k(ELU(x))))``."""

    def __call__(self, be: Any, x: Tensor) -> Tensor:
        return be.add(x, super().__call__(be, x))

    def step(self, be: Any, x: Tensor, st: list) -> Tensor:
        return be.add(x, super().step(be, x, st))


def _resblock(ws: Weights, prefix: str, dim: int, sc: dict, dilation: int) -> ResBlock:
    hidden = dim // sc["compress"]
    k = sc["residual_kernel_size"]
    return ResBlock(
        [
            Elu(),
            CausalConv1d.load(
                ws, f"{prefix}.block.1.conv.conv", dim, hidden, k, dilation=dilation, pad_mode=sc["pad_mode"]
            ),
            Elu(),
            CausalConv1d.load(ws, f"{prefix}.block.3.conv.conv", hidden, dim, 1, pad_mode=sc["pad_mode"]),
        ]
    )


def seanet_encoder(ws: Weights, prefix: str, sc: dict) -> Sequential:
    """moshi ``SEANetEncoder``: ratios applied in reverse order, channels doubling."""
    nf, pm = sc["n_filters"], sc["pad_mode"]
    layers: list[Any] = []

    def name() -> str:
        return f"{prefix}.model.{len(layers)}"

    layers.append(CausalConv1d.load(ws, name() + ".conv.conv", sc["channels"], nf, sc["kernel_size"], pad_mode=pm))
    mult = 1
    for ratio in reversed(sc["ratios"]):
        for j in range(sc["n_residual_layers"]):
            layers.append(_resblock(ws, name(), mult * nf, sc, sc["dilation_base"] ** j))
        layers.append(Elu())
        layers.append(
            CausalConv1d.load(ws, name() + ".conv.conv", mult * nf, 2 * mult * nf, 2 * ratio, stride=ratio, pad_mode=pm)
        )
        mult *= 2
    layers.append(Elu())
    layers.append(
        CausalConv1d.load(ws, name() + ".conv.conv", mult * nf, sc["dimension"], sc["last_kernel_size"], pad_mode=pm)
    )
    return Sequential(layers)


def seanet_decoder(ws: Weights, prefix: str, sc: dict) -> Sequential:
    """moshi ``SEANetDecoder``: transposed convs in ratio order, channels halving."""
    nf, pm = sc["n_filters"], sc["pad_mode"]
    layers: list[Any] = []

    def name() -> str:
        return f"{prefix}.model.{len(layers)}"

    mult = 2 ** len(sc["ratios"])
    layers.append(
        CausalConv1d.load(ws, name() + ".conv.conv", sc["dimension"], mult * nf, sc["kernel_size"], pad_mode=pm)
    )
    for ratio in sc["ratios"]:
        layers.append(Elu())
        layers.append(
            CausalConvTranspose1d.load(ws, name() + ".convtr.convtr", mult * nf, mult * nf // 2, 2 * ratio, ratio)
        )
        for j in range(sc["n_residual_layers"]):
            layers.append(_resblock(ws, name(), mult * nf // 2, sc, sc["dilation_base"] ** j))
        mult //= 2
    layers.append(Elu())
    layers.append(CausalConv1d.load(ws, name() + ".conv.conv", nf, sc["channels"], sc["last_kernel_size"], pad_mode=pm))
    return Sequential(layers)
