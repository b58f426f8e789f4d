"""``localembed bench``'s ceiling: the fp32 matrix-multiply rate of this process, per kernel.

The share of this ceiling a contender reaches counts 2 FLOPs per Linear weight per real token
(:func:`flops_per_token`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from typing import Any

__all__ = ["GEMM_SHAPES", "flops_per_token", "gemm_ceiling", "gemm_rates"]

GEMM_SHAPES = [(2048, 384, 1536), (2048, 1536, 384), (1024, 1024, 1024), (2048, 768, 3072)]
"""(rows, inner, columns) of the ceiling's matrix products: transformer Linear shapes."""


def gemm_ceiling(seconds: float = 2.0) -> float:
    """Best fp32 GFLOP/s of torch's matrix products on transformer shapes, in this process.

    The best of torch's default (MKL on x86) and oneDNN, so that on CPUs where MKL leaves
    kernels unused (AMD with AVX-512) the ceiling is the machine's, not MKL's.
    """
    return max(gemm_rates(seconds).values())


def gemm_rates(seconds: float = 2.0) -> dict[str, float]:
    """Best fp32 GFLOP/s over :data:`GEMM_SHAPES` of each kernel: "mkl" (torch.mm), "onednn"."""
    import torch

    from localembed.onednn import onednn_available

    rates: dict[str, float] = {}
    for m, k, n in GEMM_SHAPES:
        a, b = torch.randn(m, k), torch.randn(k, n)
        weight = b.t().contiguous()
        kernels: dict[str, Callable[[], Any]] = {"mkl": partial(torch.mm, a, b)}
        if onednn_available():
            kernels["onednn"] = partial(
                torch.ops.mkldnn._linear_pointwise, a, weight, None, "none", [], ""
            )
        for name, kernel in kernels.items():
            kernel()
            count, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds / 4 / len(kernels):
                kernel()
                count += 1
            rate = 2 * m * k * n * count / (time.perf_counter() - start) / 1e9
            rates[name] = max(rates.get(name, 0.0), rate)
    return rates


def flops_per_token(model_config: Any) -> float:
    """Linear-layer FLOPs per real token: 2 per weight of the layers' matrix products.

    Attention's own products (and padding) are not counted: the share of the GEMM ceiling
    is useful work only.
    """
    hidden = model_config.hidden_size
    layers = model_config.num_hidden_layers
    inner = model_config.intermediate_size
    return float(2.0 * layers * (4 * hidden * hidden + 2 * hidden * inner))
