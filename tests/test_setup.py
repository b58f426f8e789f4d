"""The set-up: the lock is what is installed, and the bge-m3 extra's FlagEmbedding imports."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from localembed.flagembedding import FLAGEMBEDDING_TRANSFORMERS

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements" / "lock.txt"

unlocked = pytest.mark.skipif(
    os.environ.get("LOCALEMBED_UNLOCKED") == "1", reason="make test-latest: newest releases"
)


def _locked() -> dict[str, str]:
    pins = {}
    for line in LOCK.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.\-]+)==(\S+)", line)
        if match:
            pins[canonicalize_name(match[1])] = match[2]
    return pins


@unlocked
def test_installed_versions_are_the_locked_ones() -> None:
    pins = _locked()
    assert pins["torch"] == "2.13.0+cpu"
    wrong = {}
    for name, pinned in pins.items():
        try:
            installed = version(name)
        except PackageNotFoundError:
            wrong[name] = (pinned, None)
            continue
        if installed != pinned:
            wrong[name] = (pinned, installed)
    assert not wrong, f"installed packages differ from {LOCK.name} (run `make setup`): {wrong}"


def test_project_dependencies_are_ranges_not_pins() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        requirements += extra
    pinned = [r for r in requirements if any(s.operator == "==" for s in Requirement(r).specifier)]
    assert not pinned, f"users get ranges; exact versions belong in the lock: {pinned}"


def test_m3_extra_caps_transformers_where_flagembedding_imports() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    transformers = [Requirement(r) for r in extras["m3"] if r.startswith("transformers")]
    assert [str(r.specifier) for r in transformers] == [
        str(Requirement("transformers" + FLAGEMBEDDING_TRANSFORMERS).specifier)
    ]
    assert "5.24.0" not in transformers[0].specifier


def test_flagembedding_imports_in_the_project_venv() -> None:
    code = "from FlagEmbedding import BGEM3FlagModel; print(callable(BGEM3FlagModel))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "True"


def test_flagembedding_import_error_names_the_transformers_cause() -> None:
    # transformers 5.24 removed this module; hide it as such a release would.
    code = (
        "import sys; sys.modules['transformers.modeling_attn_mask_utils'] = None\n"
        "from localembed.flagembedding import flagembedding_import_message\n"
        "try:\n"
        "    from FlagEmbedding import BGEM3FlagModel\n"
        "except ImportError as error:\n"
        "    print(flagembedding_import_message(error))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    message = result.stdout.strip()
    assert "transformers.modeling_attn_mask_utils" in message
    assert "transformers>=4.48,<5.24" in message
    assert "localembed[m3]" not in message  # not a reinstall hint


def test_flagembedding_missing_says_which_extra() -> None:
    code = (
        "import sys; sys.modules['FlagEmbedding'] = None\n"
        "import importlib.util\n"
        "importlib.util.find_spec = lambda name, *a: None\n"
        "from localembed.flagembedding import flagembedding_import_message\n"
        "print(flagembedding_import_message(ImportError('No module named FlagEmbedding')))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert 'pip install "localembed[m3]"' in result.stdout


def test_the_lazy_package_names_match_its_type_checking_imports() -> None:
    """``localembed/__init__.py`` names each public object twice: in the imports type checkers
    read and in the table ``__getattr__`` imports from. They must agree, and cover ``__all__``."""
    import ast
    import importlib

    import localembed

    tree = ast.parse(Path(localembed.__file__).read_text(encoding="utf-8"))
    checked = {
        alias.name: node.module.removeprefix("localembed.")
        for statement in tree.body
        if isinstance(statement, ast.If) and ast.unparse(statement.test) == "TYPE_CHECKING"
        for node in statement.body
        if isinstance(node, ast.ImportFrom) and node.module
        for alias in node.names
    }
    assert checked == localembed._HOME
    assert set(localembed.__all__) == set(checked)
    for name, module in checked.items():
        assert getattr(localembed, name) is getattr(
            importlib.import_module(f"localembed.{module}"), name
        )
