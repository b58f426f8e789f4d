"""Every example runs offline and prints what it promises.

Each example runs as a user would run it: a subprocess of this Python, offline. The tests
read the printed output (and the files written) back and check the claims it makes. An example
shown on docs/examples.md runs as the page's command (the block marked
``<!-- docs: run-by="tests/test_examples.py::TEST" -->``), and what it prints is compared with
the page here (``docs_harness.run_marked_block``), so the docs tests do not run it a second time.

Most of an example's time is importing torch and transformers and loading the model, so the
examples these tests need start together when the first of them runs, two at a time (see
``example_output``), and each test waits for its own.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest

from tests import docs_harness

pytestmark = pytest.mark.slow  # each example runs as a subprocess

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
PARALLEL_RUNS = 2


def _run(name: str, args: tuple[str, ...], env: dict[str, str] | None) -> str:
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        capture_output=True,
        text=True,
        env=environment,
        check=False,
        timeout=300,
    )
    if result.returncode != 0:
        pytest.fail(f"{name} exited with {result.returncode}:\n{result.stderr[-4000:]}")
    return result.stdout


class ExampleRun(NamedTuple):
    """How a test runs an example that no page shows; "{folder}" (a fresh folder of the test's
    own) in ``args`` and ``env`` is filled in."""

    script: str
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()


ON_THE_PAGE = None  # the test runs the docs block marked run-by it

RUNS: dict[str, ExampleRun | None] = {
    "test_demo_answers_through_both_frameworks": ExampleRun("demo.py"),
    "test_mean_pooling_beats_cls_on_the_labelled_pairs": ON_THE_PAGE,
    "test_embeddings_find_the_hotels_tfidf_misses": ON_THE_PAGE,
    "test_token_heatmap_writes_a_png_and_aligns_synonyms": ON_THE_PAGE,
    # The page's command sends the export to a `cache` folder beside it, not the home directory.
    "test_onnx_export_gives_the_torch_vectors": ON_THE_PAGE,
    "test_cde_draws_both_heatmaps_and_labels_the_tiny_model": ExampleRun(
        "cde.py", ("--output", "{folder}/cde.png", "--context-file", "{folder}/ctx.safetensors")
    ),
    "test_bge_m3_hybrid_ranks_every_mode": ON_THE_PAGE,
}


@pytest.fixture(scope="module")
def example_runs(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, tuple[Path, Future[str]]]]:
    """Start the examples of this module's selected tests, two at a time.

    Returns ``{test name: (its folder, future stdout)}``.
    """
    selected = [
        item.name
        for item in request.session.items
        if getattr(item, "module", None) is request.module and item.name in RUNS
    ]
    runs = {}
    with ThreadPoolExecutor(max_workers=PARALLEL_RUNS) as pool:
        for name in selected:
            folder = tmp_path_factory.mktemp(name.removeprefix("test_")[:30])
            example = RUNS[name]
            if example is ON_THE_PAGE:
                marked = docs_harness.run_by_id(Path(__file__), name)
                runs[name] = (folder, pool.submit(docs_harness.run_marked_block, marked, folder))
                continue
            script, args, env = example
            fields = {"folder": str(folder)}
            runs[name] = (
                folder,
                pool.submit(
                    _run,
                    script,
                    tuple(arg.format_map(fields) for arg in args),
                    {key: value.format_map(fields) for key, value in env},
                ),
            )
        yield runs
        pool.shutdown(cancel_futures=True)


@pytest.fixture
def example_output(
    request: pytest.FixtureRequest, example_runs: dict[str, tuple[Path, Future[str]]]
) -> tuple[Path, str]:
    """This test's example output (waiting for it) and the folder it wrote to."""
    folder, future = example_runs[request.node.name]
    return folder, future.result()


def test_demo_answers_through_both_frameworks(example_output: tuple[Path, str]) -> None:
    _, out = example_output
    assert out.count("Python was created by Guido van Rossum") == 2
    assert "one model in memory for both frameworks: True" in out


def test_mean_pooling_beats_cls_on_the_labelled_pairs(example_output: tuple[Path, str]) -> None:
    from scipy.stats import spearmanr

    _, out = example_output
    rows = re.findall(r"^\s*(\d\.\d)\s+(-?\d\.\d{3})\s+(-?\d\.\d{3})\s+\S.* \| \S", out, re.M)
    assert len(rows) >= 8
    labels, mean, cls = (np.array(column, dtype=float) for column in zip(*rows, strict=True))
    found = re.search(r"Spearman correlation with the labels: mean (\S+)\s+cls (\S+)", out)
    assert found, out
    rho_mean, rho_cls = float(found[1]), float(found[2])
    # The example's numpy Spearman agrees with scipy's on the printed (rounded) cosines.
    assert rho_mean == pytest.approx(spearmanr(mean, labels).statistic, abs=2e-3)
    assert rho_cls == pytest.approx(spearmanr(cls, labels).statistic, abs=2e-3)
    assert rho_mean > rho_cls + 0.05
    assert rho_mean > 0.8
    assert "best pooling for this model: mean" in out
    # CLS pooling squeezes unrelated pairs into high similarities; mean pooling keeps them low.
    unrelated = labels <= 1.0
    assert mean[unrelated].max() < cls[unrelated].min()


def _hotel_block(out: str, hotel: str) -> str:
    blocks = [block for block in out.split("\n\n") if block.startswith(f"{hotel}: ")]
    assert len(blocks) == 1, out
    return blocks[0]


def _side_by_side(block: str) -> tuple[list[str], list[str]]:
    rows = re.findall(r"^\d (.+?)\s+(\d\.\d{3})   (.+?)\s+(-?\d\.\d{3})$", block, re.M)
    assert len(rows) == 3, block
    return [row[0] for row in rows], [row[2] for row in rows]


def test_embeddings_find_the_hotels_tfidf_misses(example_output: tuple[Path, str]) -> None:
    _, out = example_output  # the two showcase hotels
    for hotel, paraphrase in (
        ("Sandpiper Inn", "Coral Bay Resort"),  # "on the sand by the ocean" ~ "beachfront"
        ("Grand Central Hotel", "The Executive Suites"),  # "business centre" ~ "conference"
    ):
        block = _hotel_block(out, hotel)
        by_words, by_meaning = _side_by_side(block)
        assert by_meaning[0] == paraphrase
        assert paraphrase not in by_words
        assert (
            f"embeddings recommend {paraphrase} (cosine" in block
            and "TF-IDF scores it 0.000, shared words: none" in block
        )


def test_token_heatmap_writes_a_png_and_aligns_synonyms(example_output: tuple[Path, str]) -> None:
    from matplotlib.image import imread

    folder, out = example_output
    assert "written to token_heatmap.png" in out
    image = imread(folder / "token_heatmap.png")
    height, width = image.shape[:2]
    assert width > 300 and height > 300
    assert image[..., :3].var() > 0.01  # not blank
    top_pairs = out.split("most similar token pairs:")[1].split("best match")[0]
    assert "sofa ~ couch" in top_pairs
    assert "cat ~ kitten" in top_pairs
    best = dict(re.findall(r"^\s+(\S+) -> (\S+)\s+\d\.\d{3}$", out, re.M))
    assert best["cat"] == "kitten"
    assert best["sofa"] == "couch"
    assert best["sleeps"] == "nap"


def test_onnx_export_gives_the_torch_vectors(example_output: tuple[Path, str]) -> None:
    folder, out = example_output
    found = re.search(r"exported model: (\S+) \(", out)
    assert found, out
    # The export went to $LOCALEMBED_CACHE (`cache` beside the command), not the home directory.
    assert found[1].startswith("cache/") and (folder / found[1]).is_file()
    cosines = {
        label.strip(): float(cosine)
        for label, cosine in re.findall(r"^(\S.+?)\s+\d\.\de[-+]\d+\s+(\d\.\d{6})$", out, re.M)
    }
    assert cosines["localembed backend=onnx"] >= 0.99999
    assert cosines["onnxruntime + tokenizers + numpy"] >= 0.99999
    assert cosines["localembed backend=onnx quantize=int8"] >= 0.95


def test_bge_m3_hybrid_ranks_every_mode(example_output: tuple[Path, str]) -> None:
    _, out = example_output
    queries = out.split("\nquery: ")[1:]
    assert len(queries) == 2
    for block in queries:
        scores = {}
        for mode in ("dense", "sparse", "colbert", "hybrid"):
            line = re.search(rf"^\s+{mode}: (.+)$", block, re.M)
            assert line, block
            pairs = re.findall(r"d(\d) (-?\d+\.\d{3})", line[1])
            assert sorted(int(doc) for doc, _ in pairs) == list(range(5))  # every document
            values = [float(score) for _, score in pairs]
            assert values == sorted(values, reverse=True)  # a ranking, best first
            scores[mode] = {int(doc): float(score) for doc, score in pairs}
        # hybrid = (0.4 dense + 0.2 sparse + 0.4 colbert) / 1.0 for every document.
        for doc, hybrid in scores["hybrid"].items():
            weighted = (
                0.4 * scores["dense"][doc]
                + 0.2 * scores["sparse"][doc]
                + 0.4 * scores["colbert"][doc]
            )
            assert hybrid == pytest.approx(weighted, abs=2e-3)
        top = re.search(r"hybrid d(\d) = \(.+\) / 1\.0 = (\S+)$", block, re.M)
        assert top and int(top[1]) == next(iter(scores["hybrid"]))
        assert re.search(rf"d{top[1]} lexical tokens: '.*' \d+\.\d{{3}}", block)
        assert "shared with the query: " in block


def test_cde_draws_both_heatmaps_and_labels_the_tiny_model(
    example_output: tuple[Path, str],
) -> None:
    folder, out = example_output
    assert "basic: all-MiniLM-L6-v2 (embedded default): top answer right for 8 of 8" in out
    assert "context: 8 dataset embeddings of 20 documents" in out
    image = (folder / "cde.png").read_bytes()
    assert image.startswith(b"\x89PNG") and len(image) > 20_000
    from localembed import load_context

    assert load_context(folder / "ctx.safetensors").size == 8
