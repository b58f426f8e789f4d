"""The command line off Unix and outside this workspace.

`resource` is Unix-only: no command but `bench` may need it (issue 10, item 4), so the CLI runs
here in a fresh interpreter where importing it fails, as on Windows. A missing STS Benchmark
folder is a one-line error in every benchmark entry point (issue 10, item 5).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from localembed import get_encoder
from localembed.cli import main

ROOT = Path(__file__).parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}

NO_RESOURCE = """
import builtins, sys
real_import = builtins.__import__
def windows_import(name, globals=None, locals=None, fromlist=(), level=0):
    # localembed's own `import resource` fails, as on Windows (psutil, which transformers
    # imports, takes its Linux path here and needs the real module).
    importer = (globals or {}).get("__name__", "")
    if name == "resource" and importer.split(".")[0].endswith("localembed"):
        raise ModuleNotFoundError("No module named 'resource'", name="resource")
    return real_import(name, globals, locals, fromlist, level)
builtins.__import__ = windows_import
from localembed.cli import main
status = main(sys.argv[1:])
assert "localembed.cli.benchmark" not in sys.modules, "the benchmark was imported"
sys.exit(status)
"""


def without_resource(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", NO_RESOURCE, *argv],
        capture_output=True,
        text=True,
        env=ENV,
        cwd=ROOT,
        timeout=300,
    )


def test_the_cli_runs_where_resource_cannot_be_imported(tmp_path: Path) -> None:
    # The shim works: localembed cannot import `resource` under it, and the benchmark's only
    # use of it (peak memory) gives None instead of failing.
    shim = NO_RESOURCE.replace(
        "from localembed.cli import main\nstatus = main(sys.argv[1:])",
        "from localembed.cli.bench_measures import peak_rss_mb\nstatus = peak_rss_mb() is not None",
    ).replace('assert "localembed.cli.benchmark" not in', "assert 1 or")
    result = subprocess.run([sys.executable, "-c", shim], capture_output=True, text=True, env=ENV)
    assert result.returncode == 0, result.stderr
    result = without_resource("info", "--help")
    assert result.returncode == 0, result.stderr
    assert "examples:" in result.stdout
    source = tmp_path / "docs.txt"
    source.write_text("one text\nanother text\n", encoding="utf-8")
    output = tmp_path / "docs.npy"
    result = without_resource("embed", str(source), "-o", str(output), "--quiet")
    assert result.returncode == 0, result.stderr
    np.testing.assert_array_equal(
        np.load(output), get_encoder().encode_documents(["one text", "another text"])
    )


def test_the_parser_does_not_import_the_benchmark() -> None:
    code = (
        "import sys; from localembed.cli import build_parser; build_parser(); "
        "heavy = {'localembed.cli.benchmark', 'torch', 'resource'}; "
        "print(sorted(m for m in sys.modules if m in heavy))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=ENV, check=True
    )
    assert result.stdout.strip() == "[]"


MISSING = "/missing/stsbenchmark"


def assert_one_line_data_error(stderr: str) -> None:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    assert MISSING in lines[0] and "sts-test.csv" in lines[0]
    assert "STS Benchmark" in lines[0] and "stsbenchmark.tar.gz" in lines[0]


@pytest.mark.parametrize("script", ["stsb.py", "throughput.py"])
def test_benchmark_scripts_reject_a_missing_data_folder(script: str) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), "--data", MISSING],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=120,
    )
    assert result.returncode != 0
    assert_one_line_data_error(result.stderr)


def test_bench_rejects_a_missing_or_empty_data_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bench", "--data", MISSING, "--no-stream"]) == 1
    assert_one_line_data_error(capsys.readouterr().err)
    (tmp_path / "sts-test.csv").write_text("not,the,format\n")
    assert main(["bench", "--data", str(tmp_path), "--no-stream"]) == 1
    err = capsys.readouterr().err
    assert "no scored sentence pairs" in err and len(err.strip().splitlines()) == 1


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    from localembed import __version__

    assert capsys.readouterr().out.strip() == f"localembed {__version__}"


def test_bench_contender_names_match_the_benchmark() -> None:
    from localembed.cli.bench_contenders import LOCALEMBED_OPTIONS
    from localembed.cli.bench_options import LOCALEMBED_CONTENDERS

    assert tuple(LOCALEMBED_OPTIONS) == LOCALEMBED_CONTENDERS
