"""Every example runs offline and prints what it promises."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(name: str) -> str:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=300,
    )
    return result.stdout


def test_demo_answers_through_both_frameworks() -> None:
    out = run_example("demo.py")
    assert out.count("Python was created by Guido van Rossum") == 2
    assert "one model in memory for both frameworks: True" in out
