"""The "Command line" page's snippets (docs/cli.md) run verbatim in an empty folder and print what it shows.

The `bash` block that makes `docs.txt` and `docs.jsonl` runs first; then every `$ ` command of
the section's `text` blocks runs in order, and its printed lines are compared with the README's
(timings masked). Left out: the interrupted `big.txt` run (it needs Ctrl-C at a given moment),
the timed `bench` run, and `info` (it prints this machine's paths).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
SKIPPED = ("big.txt", "localembed bench --contenders", "localembed info")
TIMING = re.compile(r"in \d+\.\d s, [\d,]+ rows/s")


def section() -> str:
    return (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")


def snippets() -> tuple[list[str], list[tuple[str, list[str]]]]:
    """The setup lines of the bash blocks, and (command, printed lines) of the text blocks."""
    setup: list[str] = []
    commands: list[tuple[str, list[str]]] = []
    for kind, body in re.findall(r"```(bash|text)\n(.*?)```", section(), flags=re.S):
        if kind == "bash":
            setup += body.splitlines()
            continue
        for line in body.splitlines():
            if line.startswith("$ "):
                commands.append((line[2:], []))
            elif commands:
                commands[-1][1].append(line)
    return setup, [(c, out) for c, out in commands if not any(s in c for s in SKIPPED)]


@pytest.mark.slow
def test_readme_command_line_snippets_run_verbatim(tmp_path: Path) -> None:
    setup, commands = snippets()
    assert len(setup) == 2 and len(commands) >= 12
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(ROOT),
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }

    def shell(command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True
        )

    for line in setup:
        assert shell(line).returncode == 0, line
    for command, shown in commands:
        result = shell(command)
        printed = (result.stdout + result.stderr).splitlines()
        errors = [line for line in shown if line.startswith("localembed")]
        assert (result.returncode != 0) == bool(errors), (command, result.stderr)
        assert [TIMING.sub("", line) for line in printed] == [
            TIMING.sub("", line) for line in shown
        ], command
