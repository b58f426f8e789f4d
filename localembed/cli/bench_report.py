"""``localembed bench``'s report: the table of contenders and the summary against the goals."""

from __future__ import annotations

from typing import Any

__all__ = ["print_summary", "print_table"]


def print_summary(results: list[dict[str, Any]], busy: list[dict[str, Any]], baseline: str) -> None:
    """One line per goal of the performance issue: measured value and goal."""
    if baseline != "sentence-transformers":
        return
    rows = {row["name"]: row for row in results}
    fp32 = rows.get("localembed fp32")
    lines = []
    if fp32 is not None:
        lines.append(
            f"fp32: {fp32['mixed_ratio']:.2f}x sentence-transformers (mixed), "
            f"{fp32['mixed_ceiling_pct']:.0f}% of the GEMM ceiling (goal 80%), "
            f"max 1-cos {fp32['max_1_minus_cos']:.1e}"
        )
    static = rows.get("localembed static")
    if static is not None:
        drop = (
            f", STS {static['sts_spearman'] - fp32['sts_spearman']:+.2f} vs fp32"
            if fp32 is not None
            and static["sts_spearman"] is not None
            and fp32["sts_spearman"] is not None
            else ""
        )
        lines.append(
            f"static (distilled; a trade-off, never the default): {static['mixed_ratio']:.2f}x "
            f"sentence-transformers (mixed){drop}"
        )
    torch_fp32 = rows.get("localembed torch fp32")
    if torch_fp32 is not None:
        lines.append(
            f"fp32 on torch (backend='torch'): {torch_fp32['mixed_ratio']:.2f}x "
            f"sentence-transformers (mixed), {torch_fp32['mixed_ceiling_pct']:.0f}% of the ceiling"
        )
    int8 = [row for name, row in rows.items() if "int8" in name]
    if int8:
        best = max(int8, key=lambda row: row["mixed_ratio"])
        reference_sts = fp32["sts_spearman"] if fp32 is not None else None
        delta = (
            f", STS {best['sts_spearman'] - reference_sts:+.2f} vs fp32"
            if best["sts_spearman"] is not None and reference_sts is not None
            else ""
        )
        lines.append(
            f"fastest int8: {best['name']} {best['mixed_ratio']:.2f}x sentence-transformers "
            f"(mixed; goal 2.0x){delta} (goal within 1.0)"
        )
    for row in busy:
        if row["busy_ratio"] is not None and row["name"] != "sentence-transformers":
            lines.append(
                f"beside a busy process: {row['name']} {row['busy_ratio']:.2f}x "
                f"sentence-transformers (goal 1.3x)"
            )
    for line in lines:
        print(f"# {line}")


def print_table(results: list[dict[str, Any]], baseline: str) -> None:
    """Print one row per contender: rates, ratios, latency, gaps, STS."""
    ratio = "x ST" if baseline == "sentence-transformers" else "ratio"
    print(
        f"{'contender':<28} {'mixed docs/s':>12} {ratio:>6} {'% ceil':>7} {'short docs/s':>12} "
        f"{ratio:>6} {'query ms':>9} {'x bare':>7} {'max 1-cos':>10} {'STS':>6}"
    )
    for row in results:
        sts = "-" if row["sts_spearman"] is None else f"{row['sts_spearman']:.2f}"
        gap = "-" if row["max_1_minus_cos"] is None else f"{row['max_1_minus_cos']:.1e}"
        print(
            f"{row['name']:<28} {row['mixed_docs_per_s']:>12.1f} {row['mixed_ratio']:>6.2f} "
            f"{row['mixed_ceiling_pct']:>6.0f}% {row['short_docs_per_s']:>12.1f} "
            f"{row['short_ratio']:>6.2f} {row['query_ms']:>9.2f} "
            f"{row['query_vs_bare_forward']:>7.2f} {gap:>10} {sts:>6}"
        )
    if baseline != "sentence-transformers":
        print(f"# ratios against {baseline} (sentence-transformers did not run)")
