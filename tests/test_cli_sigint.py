"""Ctrl-C (SIGINT) to ``localembed embed`` exits 130 with a message, every time (issue 19 item 6).

Repeated runs of a real child process, interrupted at different points of its run (as soon as
its output has started, a chunk in, many chunks in) and twice in a row (a second Ctrl-C during
the clean-up of the first): each exits 130, says how many rows it kept, shows no traceback, and
``--resume`` then completes it. Bounded: three children, each with a deadline.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.test_cli import run, write_input

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
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    child = subprocess.Popen(
        [sys.executable, "-m", "localembed.cli", "embed", str(source), "-o", str(output), *flags],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    state = tmp_path / "out.npy.partial.json"
    partial = tmp_path / "out.npy.partial"
    deadline = time.monotonic() + 120
    while True:
        assert child.poll() is None, child.communicate()[1]
        assert time.monotonic() < deadline, "the child wrote no rows"
        if after_rows == 0 and partial.exists():
            break
        if state.exists() and json.loads(state.read_text() or "{}").get("rows", 0) >= after_rows:
            break
        time.sleep(0.005)
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
