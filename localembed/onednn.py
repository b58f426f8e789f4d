"""fp32 Linear layers through oneDNN: torch's MKL GEMM leaves AVX-512 unused on AMD CPUs.

MKL, which runs ``torch.nn.Linear`` on x86 CPUs, chooses its AVX-512 kernels only on Intel
CPUs; on AMD CPUs with AVX-512 (Zen 4/5) it runs a slower path. oneDNN, also inside torch,
chooses its kernels from the CPU's features. :func:`use_onednn_linear` swaps a model's fp32
Linear layers for ones that call oneDNN's ``mkldnn::_linear_pointwise`` with the same
parameters (shared, not copied): the same products in another summation order (vectors
within 1e-6 of MKL's). :func:`localembed.hardware.linear_kernel` says when to use it.
"""

from __future__ import annotations

from functools import cache
from typing import Any


@cache
def _linear_class() -> Any:
    import torch

    class OneDnnLinear(torch.nn.Module):
        """A Linear layer whose product runs in oneDNN (inference; shares the parameters)."""

        def __init__(self, linear: torch.nn.Linear, activation: str = "none") -> None:
            super().__init__()
            self.in_features = linear.in_features
            self.out_features = linear.out_features
            self.weight = linear.weight
            self.bias = linear.bias
            self.activation = activation

        def forward(self, inputs: torch.Tensor) -> torch.Tensor:
            if inputs.dtype != self.weight.dtype:  # what oneDNN does not take: torch's path
                output = torch.nn.functional.linear(inputs, self.weight, self.bias)
                return torch.nn.functional.gelu(output) if self.activation == "gelu" else output
            algorithm = "none" if self.activation == "gelu" else ""
            fused: torch.Tensor = torch.ops.mkldnn._linear_pointwise(
                inputs, self.weight, self.bias, self.activation, [], algorithm
            )
            return fused

        def extra_repr(self) -> str:
            return f"in_features={self.in_features}, out_features={self.out_features}, oneDNN" + (
                "" if self.activation == "none" else f" + {self.activation}"
            )

    OneDnnLinear.__module__ = __name__
    OneDnnLinear.__qualname__ = "OneDnnLinear"
    return OneDnnLinear


def onednn_available() -> bool:
    """Whether this torch build can run Linear layers through oneDNN."""
    import torch

    return bool(
        torch.backends.mkldnn.is_available()  # type: ignore[no-untyped-call]
        and hasattr(torch.ops.mkldnn, "_linear_pointwise")
    )


def use_onednn_linear(model: Any) -> int:
    """Swap ``model``'s fp32 CPU ``torch.nn.Linear`` layers for oneDNN ones; returns how many.

    A BERT-style feed-forward (a ``dense`` Linear followed by exact GELU in
    ``intermediate_act_fn``) becomes one oneDNN call with the GELU fused in (measured on
    all-MiniLM-L6-v2: 1.04x, vectors unchanged).

    Quantized and other Linear subclasses, and layers not in float32 on the CPU, are left as
    they are. Does nothing (returns 0) where torch has no oneDNN.
    """
    import torch

    if not onednn_available():
        return 0
    linear_class = _linear_class()
    swapped = 0
    for parent in list(model.modules()):
        # BERT-style feed-forward: `dense` then exact (erf) GELU -> one fused oneDNN call.
        dense, activation = (
            getattr(parent, "dense", None),
            getattr(parent, "intermediate_act_fn", None),
        )
        if (
            _convertible(dense)
            and type(activation).__name__ == "GELUActivation"
            and getattr(activation, "act", None) is torch.nn.functional.gelu
        ):
            parent.dense = linear_class(dense, "gelu")
            parent.intermediate_act_fn = torch.nn.Identity()
            swapped += 1
        for name, child in list(parent.named_children()):
            if _convertible(child):
                setattr(parent, name, linear_class(child))
                swapped += 1
    return swapped


def _convertible(module: Any) -> bool:
    import torch

    return (
        type(module) is torch.nn.Linear
        and module.weight.dtype == torch.float32
        and module.weight.device.type == "cpu"
    )


def __getattr__(name: str) -> Any:
    # OneDnnLinear is made on first use (it subclasses torch.nn.Module, and this module
    # imports no torch); naming it here lets pickle find it.
    if name == "OneDnnLinear":
        return _linear_class()
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)
