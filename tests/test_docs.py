"""Every example on every documentation page (README.md included) runs, and shows what it prints.

One test per page (``python -m pytest tests/test_docs.py -k cli`` runs docs/cli.md); the rules
are in ``tests/docs_harness.py`` and docs/README-docs.md. Pages marked ``<!-- docs: page slow -->``
are in the slow tier; ``<!-- docs: page loopback -->`` lets a page's Python examples reach
127.0.0.1 (servers the examples start themselves).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests import docs_harness
from tests.docs_harness import PAGES, ROOT, Block, matches, page_flags

README_MAX_LINES = 250


def page_param(path: Path) -> object:
    flags = page_flags(path.read_text(encoding="utf-8"))
    marks = []
    if "slow" in flags:
        marks.append(pytest.mark.slow)
    if "loopback" in flags:
        marks.append(pytest.mark.allow_hosts(["127.0.0.1"]))
    return pytest.param(path, marks=marks, id=path.stem.lower())


@pytest.mark.parametrize("page", [page_param(path) for path in PAGES])
def test_page_examples_run_and_print_what_they_show(
    page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import constants

    # A page's Python examples run in this process and may change process-wide settings as a
    # reader would (docs/server.md turns huggingface_hub's offline mode off to reach its own
    # server on 127.0.0.1): undo them after the page.
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", constants.HF_HUB_OFFLINE)
    environment = dict(os.environ)
    try:
        counts = docs_harness.run_page(page, tmp_path)
    finally:
        os.environ.clear()
        os.environ.update(environment)
    blocks = docs_harness.page_blocks(page)
    assert counts["executed"] + counts["not-run"] + counts["run-by"] == len(blocks)


def test_every_run_by_marker_names_a_test_that_exists() -> None:
    # A block marked run-by is skipped by the page run: the test it names must exist and run it.
    marked = [(path, block) for path in PAGES for block in docs_harness.page_blocks(path)]
    marked = [(path, block) for path, block in marked if block.run_by]
    assert len(marked) >= 9
    for path, block in marked:
        assert block.language == "bash" and block.expected is not None, (path.name, block.line)
        file, _, name = str(block.run_by).partition("::")
        source = (ROOT / file).read_text(encoding="utf-8")
        where = f"{path.name}:{block.line}: {block.run_by}"
        assert re.search(rf"^def {name}\(", source, re.M), where
        assert "run_marked_block" in source, file
    assert len({block.run_by for _, block in marked}) == len(marked)


def test_readme_is_short() -> None:
    lines = (ROOT / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines (at most {README_MAX_LINES})"


def test_every_page_is_in_the_nav() -> None:
    config = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    nav = set(re.findall(r":\s*([\w./-]+\.md)\s*$", config, flags=re.M))
    pages = {path.name for path in (ROOT / "docs").glob("*.md")}
    assert pages - nav == set(), "pages missing from mkdocs.yml's nav"
    assert nav - pages == set(), "nav entries without a page"


def test_not_run_markers_name_a_reason_and_stay_rare() -> None:
    reasons = [reason for *_, found in docs_harness.census() for reason in found]
    assert all(len(reason.split(": ", 1)[1]) > 15 for reason in reasons), reasons
    runnable = sum(count for _, count, _, _ in docs_harness.census())
    # At most a quarter: most not-run blocks are benchmark commands whose recorded output the
    # page shows (minutes of timed rounds), each with its reason on the page.
    assert len(reasons) * 4 <= runnable, f"{len(reasons)} of {runnable} blocks are not run"
    # A malformed marker (no reason) is not a marker: its block would run.
    for path in PAGES:
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.startswith("<!-- docs: not-run"):
                assert docs_harness.NOT_RUN.search(line), f"{path.name}: {line}"


def test_comparison_rules() -> None:
    assert matches("0.493  fees", "0.494  fees")  # one unit in the last shown digit
    assert not matches("0.493  fees", "0.495  fees")
    assert not matches("0.493  fees", "0.493  fines")
    assert matches("[(3, 0.6745523810386658)]", "[(3, 0.674552)]")
    assert not matches("[(3, 0.6745523810386658)]", "[(3, 0.67456)]")
    assert matches("[0.6743782  0.67455244]", "[0.67437816 0.67455244]")  # numpy's padding
    assert not matches("[0.6743782 0.67455244]", "[0.67437816,0.67455244]")
    assert matches("2.4e-07", "2.5e-07") and not matches("2.4e-07", "2.4e-05")
    assert matches("path: '.../model'", "path: '/venv/lib/site-packages/x/model'")
    assert matches("a\n...\nz", "a\nb\nc\nz")
    assert matches("embedded 4 rows in 0.1 s, 35 rows/s", "embedded 4 rows in 2.3 s, 2 rows/s")
    assert not matches("embedded 4 rows", "embedded 5 rows")
    assert matches("384  \n\n", "384")
    assert not matches("384", "384\n385")


def test_a_wrong_output_fails_the_page(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("```python\nx = 2\nprint(x + 1)\n```\n\n```text\n4\n```\n", encoding="utf-8")
    with pytest.raises(AssertionError, match="printed"):
        docs_harness.run_page(page, tmp_path)
    page.write_text(
        "```python\nprint(x)\n```\n\n```text\n3\n```\n"
        "```bash\necho hi > f.txt\ncat f.txt\n```\n\n```text\nhi\n```\n"
        "```console\n$ cat f.txt\nhi\n$ ls missing\n"
        "ls: cannot access 'missing': No such file or directory\n```\n"
        '<!-- docs: not-run reason="never runs: it would fail" -->\n'
        "```python\nraise SystemExit(1)\n```\n",
        encoding="utf-8",
    )
    page.write_text("```python\nx = 3\n```\n" + page.read_text(encoding="utf-8"), encoding="utf-8")
    counts = docs_harness.run_page(page, tmp_path)
    assert counts == {"executed": 4, "compared": 4, "not-run": 1, "run-by": 0}
    assert [b.language for b in docs_harness.page_blocks(page)] == [
        "python",
        "python",
        "bash",
        "console",
        "python",
    ]
    assert isinstance(docs_harness.page_blocks(page)[0], Block)


def test_a_failing_bash_block_fails_the_page(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("```bash\nfalse\necho never\n```\n", encoding="utf-8")
    with pytest.raises(AssertionError, match="exited with 1"):
        docs_harness.run_page(page, tmp_path)


def test_a_run_by_block_is_left_to_its_test_which_compares_it(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    marker = '<!-- docs: run-by="tests/test_x.py::test_y" -->\n'
    page.write_text(f"{marker}```bash\necho 2\n```\n\n```text\n3\n```\n", encoding="utf-8")
    # The page run skips it (it would fail there: it prints 2, the page shows 3) ...
    assert docs_harness.run_page(page, tmp_path)["run-by"] == 1
    # ... and its test runs it and compares.
    with pytest.raises(AssertionError, match="printed something else"):
        docs_harness.run_marked_block("tests/test_x.py::test_y", tmp_path, pages=[page])
    page.write_text(f"{marker}```bash\necho 3\n```\n\n```text\n3\n```\n", encoding="utf-8")
    assert docs_harness.run_marked_block("tests/test_x.py::test_y", tmp_path, pages=[page]) == "3\n"
    with pytest.raises(AssertionError, match="0 blocks are marked"):
        docs_harness.run_marked_block("tests/test_x.py::test_z", tmp_path, pages=[page])
