"""Loading and releasing served models off the event loop (the server's worker threads).

A load runs in a daemon thread of its own (:func:`in_daemon_thread`), so a server that stops
during a long load exits without waiting for it; a release drops the models from the shared
caches and gives their memory back.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import threading
from typing import TYPE_CHECKING, Any

from localembed.server.memory import trim

if TYPE_CHECKING:
    from localembed.server.models import ModelSpec

LOAD_THREADS: set[str] = set()
"""Names of the load threads running now."""

_process_threads: list[int] = []
"""torch's intra-op thread count when the server started (what ``threads="auto"`` caps)."""


async def in_daemon_thread(function: Any, argument: Any, name: str) -> Any:
    """``function(argument)`` in a daemon thread of its own, awaited.

    Unlike ``asyncio.to_thread`` (whose pool is joined at exit), nothing waits for it: a
    server stopping during a long load exits without waiting for the load to end.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()
    thread_name = f"localembed-{name}"

    def settle(result: Any, error: BaseException | None) -> None:
        if future.done():  # the awaiting task was cancelled (the server stopped)
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    def run() -> None:
        result, error = None, None
        try:
            result = function(argument)
        except BaseException as caught:  # handed to the awaiting task
            error = caught
        finally:
            LOAD_THREADS.discard(thread_name)
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(settle, result, error)

    LOAD_THREADS.add(thread_name)
    threading.Thread(target=run, name=thread_name, daemon=True).start()
    return await future


def import_libraries() -> None:
    """Import torch and transformers now, so a lazy model's first request does not wait for it.

    The libraries' memory is then in the RSS before any model loads, so each model's
    measured growth is its own.
    """
    import torch
    import transformers

    _process_threads[:] = [torch.get_num_threads()]

    import localembed.encoder
    import localembed.reranker  # noqa: F401

    # transformers imports these lazily, and two threads importing one at once can fail.
    for name in ("AutoConfig", "AutoTokenizer", "AutoModel", "AutoModelForSequenceClassification"):
        getattr(transformers, name)


def check_files(spec: ModelSpec) -> None:
    """Read what a load of ``spec`` reads first, and see that its weight files are there.

    Run before other models are evicted to make room for it: a model whose files cannot
    load (a missing directory, a broken ``config.json``, no weights) evicts nothing. Weights
    are not read.

    Raises:
        ModelError: the model's files are missing or unreadable (the load would fail too).
    """
    from localembed.loading import locate_model
    from localembed.st_metadata import read_sentence_transformers_metadata
    from localembed.static import is_static_model
    from localembed.transformers_files import load_model_config
    from localembed.weights import weight_files

    config = spec.config
    source = locate_model(config.model, allow_pickle_weights=config.allow_pickle_weights)
    if is_static_model(source.path):
        return
    directory = read_sentence_transformers_metadata(source.path).transformer_path
    load_model_config(directory, trust_remote_code=config.trust_remote_code)
    weight_files(directory, allow_pickle_weights=config.allow_pickle_weights)


def build_model(spec: ModelSpec) -> Any:
    """Load the model of ``spec`` (in a worker thread).

    ``threads="auto"`` resolves against the process's count at start, not the count a model
    loaded before with ``threads = N`` left behind.
    """
    from localembed.config import EncoderConfig, RerankerConfig

    if _process_threads:
        import torch

        torch.set_num_threads(_process_threads[0])
    config = spec.config
    if isinstance(config, RerankerConfig):
        from localembed.reranker import get_reranker

        return get_reranker(config)
    from localembed.encoder import get_encoder

    assert isinstance(config, EncoderConfig)
    return get_encoder(config)


def release_models(box: list[Any]) -> None:
    """Drop models from the shared caches and give their memory back (in a worker thread)."""
    from localembed.encoder import LocalEncoder, release_encoder
    from localembed.reranker import LocalReranker, release_reranker

    while box:
        item = box.pop()
        if isinstance(item, LocalReranker):
            release_reranker(item)
        elif isinstance(item, LocalEncoder):
            release_encoder(item)
        del item
    gc.collect()
    trim()
