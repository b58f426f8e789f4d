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

        def __init__(self, linear: torch.nn.Linear) -> None:
            super().__init__()
            self.in_features = linear.in_features
            self.out_features = linear.out_features
            self.weight = linear.weight
            self.bias = linear.bias

        def forward(self, inputs: torch.Tensor) -> torch.Tensor:
            if inputs.dtype != self.weight.dtype:  # what oneDNN does not take: torch's path
                return torch.nn.functional.linear(inputs, self.weight, self.bias)
            output: torch.Tensor = torch.ops.mkldnn._linear_pointwise(
                inputs, self.weight, self.bias, "none", [], ""
            )
            return output

        def extra_repr(self) -> str:
            return f"in_features={self.in_features}, out_features={self.out_features}, oneDNN"

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

    Quantized and other Linear subclasses, and layers not in float32 on the CPU, are left as
    they are. Does nothing (returns 0) where torch has no oneDNN.
    """
    import torch

    if not onednn_available():
        return 0
    linear_class = _linear_class()
    swapped = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if (
                type(child) is torch.nn.Linear
                and child.weight.dtype == torch.float32
                and child.weight.device.type == "cpu"
            ):
                setattr(parent, name, linear_class(child))
                swapped += 1
    return swapped


def __getattr__(name: str) -> Any:
    # OneDnnLinear is made on first use (it subclasses torch.nn.Module, and this module
    # imports no torch); naming it here lets pickle find it.
    if name == "OneDnnLinear":
        return _linear_class()
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)
