"""Ctrl-C (SIGINT) to ``localembed embed`` exits 130 with a message, every time (issue 19 item 6).

Repeated runs of a real child process, interrupted at different points of its run (as soon as
its output has started, a chunk in, many chunks in) and twice in a row (a second Ctrl-C during
the clean-up of the first): each exits 130, says how many rows it kept, shows no traceback, and
``--resume`` then completes it. Bounded: three children, each with a deadline.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import numpy as np
import pytest

from tests.cli_helpers import run, start_embed, wait_for_rows, write_input

ROWS = 1200


@pytest.mark.parametrize(
    ("after_rows", "signals"), [(0, 1), (160, 1), (32, 2)], ids=["start", "10", "x2"]
)
def test_sigint_exits_130_every_time(
    after_rows: int,
    signals: int,
    tiny_bert_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    source = write_input(tmp_path / "in.txt", [f"row {i} of the input" for i in range(ROWS)])
    output = tmp_path / "out.npy"
    flags = ["--model", str(tiny_bert_dir), "--chunk-size", "16"]
    child = start_embed(source, output, flags)
    wait_for_rows(child, output, after_rows, poll_s=0.005)
    for _ in range(signals):
        child.send_signal(signal.SIGINT)
        time.sleep(0.02)
    _, err = child.communicate(timeout=60)
    assert child.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err, err
    assert err.count("localembed: interrupted") == 1, err
    assert not output.exists()
    code, _, err = run(capsys, "embed", source, "-o", output, *flags, "--resume")
    assert code == 0, err
    assert np.load(output).shape[0] == ROWS
