"""The executed-docs harness: every example on every page runs, and its printed output is compared.

Built on Sybil (its ``Document``/``Region``/``Example`` model and its Markdown fenced-block
lexer); the rules are these (docs/README-docs.md says them for page writers):

- ```` ```python ```` blocks of a page run in order in one namespace (one per page). Their
  working directory is the page's own temporary folder.
- ```` ```bash ```` blocks run with ``bash -e -o pipefail`` in that folder (so a page's Python and
  shell examples see the same files), with the venv's ``bin`` first on ``PATH``; they must exit 0.
  Their shown output is their stdout (logs and progress bars go to stderr).
- ```` ```console ```` blocks are terminal sessions: one bash per block, in that folder, runs each
  ``$ command`` (continued by lines ending in ``\\``) in turn, so variables, ``cd`` and jobs carry
  over (``kill %1``); the lines after a command, up to the next ``$``, are what it prints (stdout
  and stderr together), and are compared; any exit status is accepted.
- A ```` ```text ```` block right after a python or bash block (nothing but blank lines between) is
  what that block prints to stdout, and is compared.
- ``<!-- docs: not-run reason="..." -->`` on the line before a block: the block does not run
  (it is counted, and the site shows the reason: docs/hooks.py).
- ``<!-- docs: run-by="tests/test_x.py::test_y" -->`` on the line before a bash block: that test
  runs the block (``run_marked_block``), compares what it prints with the page as the page run
  would, and then checks the example's claims on the same output, so an example that a test
  checks runs once, not twice; the page run skips it.
- ``<!-- docs: page slow -->`` anywhere on a page: the page is in the slow tier;
  ``<!-- docs: page loopback -->``: its Python examples may open TCP connections to 127.0.0.1.

Comparison (printed vs shown), after stripping trailing spaces and trailing blank lines:

- ``...`` in the shown output matches any text (also across lines), as doctest's ELLIPSIS;
- a number with a decimal point may differ by one unit in its last shown digit, or by 1e-6
  (CPUs round differently in the last bits);
- a run of spaces matches any run of spaces (numpy pads an array's columns to its longest number,
  so a last digit that another CPU drops moves the padding);
- durations and rates (``0.52 s``, ``12 ms``, ``35 rows/s``) are not compared.

The folder also holds links to the clone's ``examples``, ``benchmarks`` and ``tests`` folders,
so a command written for the clone's root (``python examples/demo.py``) runs as shown.
"""

from __future__ import annotations

import contextlib
import difflib
import io
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sybil import Document, Example, Region
from sybil.parsers.markdown.lexers import FencedCodeBlockLexer

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RUNNABLE = ("python", "bash", "console")
NOT_RUN = re.compile(r'<!-- docs: not-run reason="(?P<reason>[^"]+)" -->\s*$')
RUN_BY = re.compile(r'<!-- docs: run-by="(?P<test>[^"]+)" -->\s*$')
PAGE_FLAG = re.compile(r"<!-- docs: page (?P<flags>[a-z -]+?) -->")
LINKED = ("examples", "benchmarks", "tests")
COMMAND_TIMEOUT_S = 600

# Shown output: `...`, a decimal number, or a duration/rate (masked on both sides).
TIMING = re.compile(r"\d+(?:\.\d+)?\s?(?:ms|s|rows?/s)\b")
FLOAT = re.compile(r"-?\d+\.\d+(?:[eE][-+]?\d+)?")
TOKEN = re.compile(rf"(\.\.\.)|({FLOAT.pattern})")


@dataclass
class Block:
    """One fenced block of a page, as the harness sees it."""

    language: str
    source: str
    line: int
    expected: str | None = None
    not_run: str | None = None
    run_by: str | None = None


@dataclass
class PageRun:
    """State shared by the examples of one page: its folder and what it started."""

    folder: Path
    env: dict[str, str]
    sessions: list[int] = field(default_factory=list)
    counts: dict[str, int] = field(
        default_factory=lambda: {"executed": 0, "compared": 0, "run-by": 0}
    )


def page_flags(text: str) -> set[str]:
    """The ``<!-- docs: page ... -->`` flags of a page (``slow``, ``loopback``)."""
    return {flag for match in PAGE_FLAG.finditer(text) for flag in match["flags"].split()}


def blocks(document: Document) -> list[tuple[Region, Block]]:
    """Every fenced block of ``document``, with its shown output and not-run reason attached.

    Returns the regions of runnable blocks (python, bash, console); a ``text`` block that
    follows one of them becomes its ``expected`` output and has no region of its own.
    """
    lexer = FencedCodeBlockLexer(r"[\w+-]*")
    found = sorted(lexer(document), key=lambda region: region.start)
    result: list[tuple[Region, Block]] = []
    previous: tuple[Region, Block] | None = None
    for region in found:
        language = str(region.lexemes["language"])
        source = str(region.lexemes["source"])
        line = document.text.count("\n", 0, region.start) + 1
        gap = document.text[previous[0].end : region.start] if previous else ""
        if (
            language == "text"
            and previous
            and not gap.strip()
            and previous[1].language != "console"
        ):
            previous[1].expected = source
            previous[0].end = region.end
            previous = None
            continue
        if language not in RUNNABLE:
            previous = None
            continue
        before = document.text[: region.start].rstrip("\n").rsplit("\n", 1)[-1]
        marker = NOT_RUN.search(before)
        run_by = RUN_BY.search(before)
        block = Block(
            language,
            source,
            line,
            not_run=marker["reason"] if marker else None,
            run_by=run_by["test"] if run_by else None,
        )
        previous = (region, block)
        result.append(previous)
    return result


def parse(path: Path) -> Document:
    """A Sybil document of ``path`` whose examples are its runnable blocks."""
    document = Document(path.read_text(encoding="utf-8"), str(path))
    for region, block in blocks(document):
        document.add(Region(region.start, region.end, parsed=block, evaluator=evaluate))
    return document


def page_blocks(path: Path) -> list[Block]:
    """The runnable blocks of a page, in order."""
    return [example.parsed for example in parse(path)]


# ---------------------------------------------------------------------------------------------
# Comparison


def _clean(text: str) -> str:
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    return "\n".join(lines)


def _tolerance(shown: str) -> float:
    mantissa, _, exponent = shown.lower().partition("e")
    decimals = len(mantissa.split(".")[1])
    return max(10.0**-decimals * 10.0 ** int(exponent or 0), 1e-6) * 1.0001


def _literal(text: str) -> str:
    return " +".join(re.escape(part) for part in re.split(r" +", text))


def matches(shown: str, printed: str) -> bool:
    """Whether ``printed`` is what ``shown`` shows, under the rules in this module's docstring."""
    shown, printed = TIMING.sub("<time>", _clean(shown)), TIMING.sub("<time>", _clean(printed))
    pattern: list[str] = []
    numbers: list[str] = []
    position = 0
    for token in TOKEN.finditer(shown):
        pattern.append(_literal(shown[position : token.start()]))
        if token.group(1):
            pattern.append("(?:.*?)")
        else:
            pattern.append(f"({FLOAT.pattern})")
            numbers.append(token.group(2))
        position = token.end()
    pattern.append(_literal(shown[position:]))
    found = re.fullmatch("".join(pattern), printed, flags=re.S)
    if found is None:
        return False
    return all(
        abs(float(got) - float(want)) <= _tolerance(want)
        for want, got in zip(numbers, found.groups(), strict=True)
    )


def compare(block: Block, printed: str, what: str = "printed") -> str | None:
    """None when ``printed`` matches the block's shown output, else a readable diff."""
    assert block.expected is not None
    if matches(block.expected, printed):
        return None
    diff = difflib.unified_diff(
        _clean(block.expected).split("\n"),
        _clean(printed).split("\n"),
        "shown on the page",
        what,
        lineterm="",
    )
    return "\n".join(diff)


# ---------------------------------------------------------------------------------------------
# Running


def start_page(path: Path, folder: Path) -> PageRun:
    """Prepare ``folder`` (links to the clone's example folders) and the shell environment."""
    for name in LINKED:
        link = folder / name
        if not link.exists():
            link.symlink_to(ROOT / name, target_is_directory=True)
    bin_dir = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": str(ROOT),
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "COLUMNS": "100",
    }
    env.pop("PYTEST_CURRENT_TEST", None)
    return PageRun(folder, env)


CURRENT: dict[str, PageRun] = {}


def run_shell(run: PageRun, command: str) -> tuple[int, str, str]:
    """Run a bash block in the page's folder: (exit status, stdout, stderr). Output goes through
    files, so a server the block leaves in the background cannot hold a pipe open."""
    log = run.folder / ".docs-shell-output"
    errors = run.folder / ".docs-shell-errors"
    with log.open("wb") as out, errors.open("wb") as err:
        process = subprocess.Popen(
            ["bash", "-e", "-o", "pipefail", "-c", command],
            cwd=run.folder,
            env=run.env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,
        )
        run.sessions.append(process.pid)
        try:
            code = process.wait(timeout=COMMAND_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            stop_session(process.pid)
            code = -1
    return (
        code,
        log.read_text(encoding="utf-8", errors="replace"),
        errors.read_text(encoding="utf-8", errors="replace"),
    )


def stop_session(session: int) -> None:
    """SIGTERM, then SIGKILL, every process of a session the harness started."""
    import psutil

    def members() -> list[psutil.Process]:
        found = []
        for process in psutil.process_iter(["pid"]):
            with contextlib.suppress(psutil.Error, ProcessLookupError):
                if os.getsid(process.pid) == session:
                    found.append(process)
        return found

    for sig in (signal.SIGTERM, signal.SIGKILL):
        alive = members()
        if not alive:
            return
        for process in alive:
            with contextlib.suppress(psutil.Error):
                process.send_signal(sig)
        psutil.wait_procs(alive, timeout=10)


def finish_page(run: PageRun, children_before: set[int]) -> None:
    """Stop what the page's examples left running: shell sessions and Python's child processes."""
    import psutil

    for session in run.sessions:
        stop_session(session)
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():  # a page's example that failed before its shutdown
        ray.shutdown()
    children = [
        child
        for child in psutil.Process().children(recursive=True)
        if child.pid not in children_before
    ]
    for child in children:
        with contextlib.suppress(psutil.Error):
            child.terminate()
    psutil.wait_procs(children, timeout=10)
    for child in children:
        with contextlib.suppress(psutil.Error):
            child.kill()


class ConsoleSession:
    """One bash process for a console block: its commands share variables, ``cd`` and jobs
    (``kill %1`` stops what ``... &`` started), as they would typed into one terminal."""

    DONE = "__docs_command_done__"

    def __init__(self, run: PageRun) -> None:
        self.run_state = run
        self.log = run.folder / ".docs-console-output"

    def __enter__(self) -> ConsoleSession:
        self.out = self.log.open("wb")
        self.process = subprocess.Popen(
            ["bash"],
            cwd=self.run_state.folder,
            env=self.run_state.env,
            stdin=subprocess.PIPE,
            stdout=self.out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.run_state.sessions.append(self.process.pid)
        self.read = 0
        return self

    def run(self, command: str) -> str:
        """Run one command; what it printed (stdout and stderr, in order)."""
        assert self.process.stdin is not None
        # stdin is the session's own command stream: a command reads /dev/null instead.
        script = f"{{\n{command}\n}} < /dev/null\nprintf '\\n{self.DONE}\\n'\n"
        self.process.stdin.write(script.encode())
        self.process.stdin.flush()
        deadline = time.monotonic() + COMMAND_TIMEOUT_S
        marker = f"\n{self.DONE}\n"
        while time.monotonic() < deadline:
            text = self.log.read_bytes()[self.read :].decode("utf-8", errors="replace")
            if marker in text:
                output = text[: text.index(marker)]
                self.read += len(text[: text.index(marker) + len(marker)].encode())
                return output
            if self.process.poll() is not None:
                return text + f"\n(the shell exited with {self.process.returncode})"
            time.sleep(0.05)
        return f"(timed out after {COMMAND_TIMEOUT_S} s)"

    def __exit__(self, *_: object) -> None:
        assert self.process.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            self.process.stdin.close()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            stop_session(self.process.pid)
        self.out.close()


def console_commands(source: str) -> Iterator[tuple[str, str]]:
    """(command, shown output) for each ``$ `` command of a console block."""
    command: list[str] = []
    shown: list[str] = []
    continued = False
    for line in source.split("\n"):
        if continued:
            command.append(line)
            continued = line.endswith("\\")
        elif line.startswith("$ "):
            if command:
                yield "\n".join(command), "\n".join(shown)
            command, shown = [line[2:]], []
            continued = line.endswith("\\")
        elif command:
            shown.append(line)
    if command:
        yield "\n".join(command), "\n".join(shown)


def evaluate(example: Example) -> str | None:
    """Run one block; a string is a failure message (Sybil raises it as the test's failure)."""
    block: Block = example.parsed
    where = f"{Path(example.path).name}:{block.line}"
    run = CURRENT[example.path]
    if block.not_run:
        return None
    if block.run_by:
        run.counts["run-by"] += 1
        return None
    run.counts["executed"] += 1
    if block.language == "python":
        code = compile(block.source, where, "exec")
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            exec(code, example.namespace)  # running the page's example is the point
        if block.expected is not None:
            run.counts["compared"] += 1
            failure = compare(block, printed.getvalue())
            if failure:
                return f"{where}: the python block printed something else:\n{failure}"
        return None
    if block.language == "bash":
        code_, output, errors = run_shell(run, block.source)
        if code_ != 0:
            return f"{where}: the bash block exited with {code_}:\n{output}{errors}"
        if block.expected is not None:
            run.counts["compared"] += 1
            failure = compare(block, output)
            if failure:
                return f"{where}: the bash block printed something else:\n{failure}"
        return None
    with ConsoleSession(run) as session:
        for command, shown in console_commands(block.source):
            started = time.monotonic()
            output = session.run(command)
            run.counts["compared"] += 1
            failure = compare(Block("console", command, block.line, expected=shown), output)
            if failure:
                seconds = time.monotonic() - started
                return f"{where}: `$ {command}` ({seconds:.1f} s) printed otherwise:\n{failure}"
    return None


def run_page(path: Path, folder: Path) -> dict[str, int]:
    """Run every example of a page in order; return the counts (executed, compared, not-run)."""
    import psutil

    document = parse(path)
    run = start_page(path, folder)
    CURRENT[document.path] = run
    before = {child.pid for child in psutil.Process().children(recursive=True)}
    previous = Path.cwd()
    os.chdir(folder)
    try:
        not_run = 0
        for example in document:
            not_run += bool(example.parsed.not_run)
            example.evaluate()
    finally:
        os.chdir(previous)
        finish_page(run, before)
        CURRENT.pop(document.path, None)
    return {**run.counts, "not-run": not_run}


def run_marked_block(test: str, folder: Path, pages: Sequence[Path] = tuple(PAGES)) -> str:
    """Run the one bash block that a page marks ``run-by="<test>"``, in ``folder`` prepared as the
    page run prepares its folder; return its stdout.

    Raises AssertionError (the test's failure) when no block or several carry the marker, when
    the block exits non-zero, or when it prints something else than the page shows. Only the
    block's own process session is stopped afterwards, so tests may run marked blocks side by
    side in threads.
    """
    found = [(path, block) for path in pages for block in page_blocks(path) if block.run_by == test]
    if len(found) != 1:
        message = f"{len(found)} blocks are marked run-by={test!r}; expected exactly one"
        raise AssertionError(message)
    path, block = found[0]
    where = f"{path.name}:{block.line}"
    if block.language != "bash":
        message = f"{where}: run-by marks a {block.language} block; only bash blocks can be"
        raise AssertionError(message)
    run = start_page(path, folder)
    try:
        code, output, errors = run_shell(run, block.source)
    finally:
        for session in run.sessions:
            stop_session(session)
    if code != 0:
        message = f"{where}: the bash block exited with {code}:\n{output}{errors}"
        raise AssertionError(message)
    if block.expected is not None:
        failure = compare(block, output)
        if failure:
            message = f"{where}: the bash block printed something else:\n{failure}"
            raise AssertionError(message)
    return output


def run_by_id(test_file: Path, name: str) -> str:
    """The ``run-by`` id of a test: its file relative to the clone, ``::``, its name."""
    return f"{test_file.resolve().relative_to(ROOT).as_posix()}::{name}"


def census() -> list[tuple[str, int, int, list[str]]]:
    """(page, runnable blocks, blocks with compared output, not-run reasons) for every page."""
    rows = []
    for path in PAGES:
        found = page_blocks(path)
        compared = sum(
            1
            for b in found
            if not b.not_run
            and (b.expected is not None or (b.language == "console" and "$ " in b.source))
        )
        reasons = [f"line {b.line}: {b.not_run}" for b in found if b.not_run]
        rows.append((path.relative_to(ROOT).as_posix(), len(found), compared, reasons))
    return rows


def main() -> None:
    """Print the census: ``python -m tests.docs_harness``."""
    total = [0, 0, 0]
    for page, runnable, compared, reasons in census():
        total = [total[0] + runnable, total[1] + compared, total[2] + len(reasons)]
        print(f"{page:28} {runnable:3} blocks  {compared:3} compared  {len(reasons)} not run")
        for reason in reasons:
            print(f"{'':30}not run, {reason}")
    print(f"{'all pages':28} {total[0]:3} blocks  {total[1]:3} compared  {total[2]} not run")


if __name__ == "__main__":
    main()
