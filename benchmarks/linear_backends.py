"""fp32 Linear through MKL (torch's default) vs oneDNN, on transformer shapes, in one process.

    python benchmarks/linear_backends.py [--rounds 2]

Prints GFLOP/s of ``F.linear`` (MKL sgemm on x86), ``torch.ops.mkldnn._linear_pointwise``
(oneDNN, as Inductor uses it) and ``torch.utils.mkldnn.MkldnnLinear`` for the Linear shapes of
MiniLM (384/1536) and base models (768/3072). On AMD CPUs MKL can take a slow path, which
would make oneDNN the faster choice; this measures whether it does on the machine at hand.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from functools import partial
from typing import Any

SHAPES = [(2048, 384, 1536), (2048, 1536, 384), (512, 384, 1536), (2048, 768, 3072)]
"""(rows, in features, out features)."""


def seconds_per_call(function: Callable[[], Any], calls: int = 20) -> float:
    for _ in range(3):
        function()
    start = time.perf_counter()
    for _ in range(calls):
        function()
    return (time.perf_counter() - start) / calls


def main() -> None:
    import torch
    import torch.utils.mkldnn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    print(
        f"# torch {torch.__version__}, {torch.get_num_threads()} threads, GFLOP/s (higher is better)"
    )
    print(
        f"{'rows x in -> out':<22} {'F.linear (MKL)':>15} {'oneDNN pointwise':>17} {'MkldnnLinear':>13}"
    )
    for _ in range(args.rounds):
        for rows, inputs, outputs in SHAPES:
            x, weight, bias = (
                torch.randn(rows, inputs),
                torch.randn(outputs, inputs),
                torch.randn(outputs),
            )
            module = torch.utils.mkldnn.MkldnnLinear(
                torch.nn.Linear(inputs, outputs), torch.float32
            )
            candidates = [
                partial(torch.nn.functional.linear, x, weight, bias),
                partial(torch.ops.mkldnn._linear_pointwise, x, weight, bias, "none", [], ""),
                partial(module, x),
            ]
            flops = 2 * rows * inputs * outputs
            rates = [flops / seconds_per_call(f) / 1e9 for f in candidates]
            print(
                f"{rows:>5} x {inputs:>4} -> {outputs:<6} {rates[0]:>15.0f} {rates[1]:>17.0f} {rates[2]:>13.0f}"
            )


if __name__ == "__main__":
    main()
