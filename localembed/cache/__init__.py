"""The embedding cache: vectors keyed by everything that shapes them, shared by every surface.

``get_encoder(cache="DIR")`` (SQLite in WAL mode in that directory, standard library) or
``get_encoder(cache="redis://host:6379/0")`` (a shared Redis/Valkey server); the adapters,
``localembed embed --cache DIR`` and ``localembed serve --cache DIR`` pass the same setting
through :class:`~localembed.EncoderConfig`. Nothing leaves the machine unless a
``redis://`` URL is given.

What is stored: the *finished float32 vector* (after pooling, normalization and the
``truncate_dim`` cut, after the non-finite check), with the text's token count and whether it
was truncated. ``precision`` (float16, int8, binary...) is applied after the cache, on the
whole call's vectors, exactly as without a cache: int8/uint8 ranges computed from a call's own
vectors depend on the other texts of the call, so a per-text cache of quantized bytes could not
be right; from the stored float32 bytes every precision is reproduced bit for bit. A NaN or
infinite vector raises before anything is written.

The key (:mod:`localembed.cache.records`): SHA-256 over the model's fingerprint (its files'
content, :mod:`localembed.fingerprint`), the resolved pooling, normalize, the instruction
actually prepended, max_length, long_text, truncate_dim, dtype, device type, backend,
quantization, the localembed version, the torch, transformers, tokenizers (and, on ONNX
Runtime, onnxruntime) versions and the stored form, then the text's exact code points.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from localembed.cache.records import Record, decode, encode, namespace_digest, text_key
from localembed.cache.sqlite_store import DATABASE_NAME
from localembed.errors import InputError
from localembed.forks import ForkSafeLock

if TYPE_CHECKING:
    import torch

    from localembed.config import EncoderConfig
    from localembed.microbatch import Encoded
    from localembed.settings import ResolvedSettings

__all__ = [
    "STATS",
    "NOT_KEYED",
    "CacheStore",
    "EmbeddingCache",
    "Lookup",
    "Rows",
    "cache_namespace",
    "is_redis_url",
    "key_fields",
    "open_store",
    "runtime_versions",
]

logger = logging.getLogger("localembed")

REDIS_SCHEMES = ("redis://", "rediss://", "unix://")

STATS = (
    "hits",
    "misses",
    "computed",
    "corrupt",
    "writes",
    "entries",
    "bytes",
    "evictions",
)
"""The keys of :meth:`EmbeddingCache.stats` (and ``encoder.cache_stats()``)."""


class KeyedEncoder(Protocol):
    """What the cache reads of an encoder (a ``LocalEncoder``) to key its vectors."""

    @property
    def config(self) -> EncoderConfig: ...

    @property
    def settings(self) -> ResolvedSettings: ...

    @property
    def fingerprint(self) -> str: ...

    @property
    def dtype(self) -> torch.dtype: ...

    @property
    def device(self) -> torch.device: ...

    @property
    def dimension(self) -> int: ...

    @property
    def runtime(self) -> object: ...


class CacheStore(Protocol):
    """Key -> bytes: :class:`~localembed.cache.sqlite_store.SQLiteStore` or the Redis store."""

    kind: str

    def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        """The stored bytes of each key (None: absent)."""

    def put_many(self, items: Sequence[tuple[bytes, bytes]]) -> int:
        """Store each (key, value); return the entries evicted."""

    def delete(self, keys: Sequence[bytes]) -> None:
        """Remove ``keys``."""

    def size(self) -> tuple[int, int]:
        """(entries, bytes) stored now."""

    def evictions(self) -> int:
        """Entries evicted so far."""

    def close(self) -> None:
        """Release connections."""


def is_redis_url(spec: str) -> bool:
    """Whether ``spec`` names a Redis/Valkey server rather than a directory.

    Example:
        >>> is_redis_url("redis://127.0.0.1:6379/0"), is_redis_url("./cache")
        (True, False)

    """
    return spec.startswith(REDIS_SCHEMES)


_stores: dict[tuple[str, int | None], CacheStore] = {}
_stores_lock = ForkSafeLock()


def open_store(spec: str, max_bytes: int | None = None) -> CacheStore:
    """The store named by ``spec`` (one per spec and cap in a process, shared by encoders).

    Args:
        spec: a directory (created if absent) or a ``redis://`` / ``rediss://`` URL.
        max_bytes: the directory cache's size cap (None: none); a Redis server's cap is its
            own ``maxmemory``.

    Raises:
        InputError: ``max_bytes`` with a Redis URL, or ``spec`` names a file.
    """
    if is_redis_url(spec):
        if max_bytes is not None:
            msg = (
                f"cache_max_bytes={max_bytes} applies to a directory cache; a Redis server "
                "evicts by its own maxmemory and maxmemory-policy allkeys-lru"
            )
            raise InputError(msg)
        name = spec
    else:
        name = str(Path(spec).expanduser().resolve())
        if Path(name).exists() and not Path(name).is_dir():
            msg = (
                f"cache={spec!r} is a file, not a directory: a cache is a directory (created "
                f"if absent; it holds {DATABASE_NAME}) or a redis:// URL"
            )
            raise InputError(msg)
    with _stores_lock:
        store = _stores.get((name, max_bytes))
        if store is None:
            if is_redis_url(spec):
                from localembed.cache.redis_store import RedisStore

                store = RedisStore(spec)
            else:
                from localembed.cache.sqlite_store import SQLiteStore

                store = SQLiteStore(name, max_bytes=max_bytes)
            _stores[(name, max_bytes)] = store
        return store


@dataclass(frozen=True)
class Rows:
    """Finished vectors of some texts and what encoding them reported, row i for text i."""

    vectors: np.ndarray
    """(texts, dimension) float32."""
    tokens: np.ndarray
    """(texts,) int64: tokens each text ran as."""
    truncated: np.ndarray
    """(texts,) bool: texts cut to max_length."""

    @property
    def truncated_rows(self) -> tuple[int, ...]:
        """Indices of the truncated texts."""
        return tuple(int(i) for i in np.flatnonzero(self.truncated))


@dataclass
class Lookup:
    """One call's texts after reading the cache: hits filled in, misses to compute."""

    keys: list[bytes]
    rows: Rows
    """Every text's row; the misses' rows are filled by :meth:`EmbeddingCache.complete`."""
    missing: dict[str, list[int]]
    """Each distinct missing text -> the rows that need it."""


class EmbeddingCache:
    """One encoder's view of a store: its key namespace and its own counters.

    Use ``get_encoder(cache=...)``; ``encoder.cache`` is this object.

    Args:
        store: where entries live.
        fields: the namespace fields (:data:`localembed.cache.records.KEY_FIELDS`) except
            ``instruction``, which each call adds.
        dimension: the finished vectors' dimension (a stored vector of another is a miss).
    """

    def __init__(self, store: CacheStore, fields: dict[str, object], dimension: int) -> None:
        self.store = store
        self.fields = dict(fields)
        self.dimension = dimension
        self._namespaces: dict[str, bytes] = {}
        self._lock = ForkSafeLock()
        self._counts = dict.fromkeys(("hits", "misses", "computed", "corrupt", "writes"), 0)

    @classmethod
    def for_encoder(cls, encoder: KeyedEncoder) -> EmbeddingCache:
        """The cache of ``encoder`` (its ``cache`` and ``cache_max_bytes`` settings)."""
        config = encoder.config
        assert config.cache is not None
        store = open_store(config.cache, config.cache_max_bytes)
        return cls(store, key_fields(encoder), encoder.dimension)

    def namespace(self, instruction: str | None) -> bytes:
        """The key namespace for texts embedded with ``instruction`` (None or "": none)."""
        instruction = instruction or ""
        with self._lock:
            known = self._namespaces.get(instruction)
        if known is None:
            known = namespace_digest({**self.fields, "instruction": instruction})
            with self._lock:
                self._namespaces[instruction] = known
        return known

    def keys(self, texts: Sequence[str], instruction: str | None) -> list[bytes]:
        """The key of each text."""
        namespace = self.namespace(instruction)
        return [text_key(namespace, text) for text in texts]

    # -- one call: look up, compute the misses, write back --------------------------------

    def lookup(self, texts: Sequence[str], instruction: str | None) -> Lookup:
        """Read every text's entry; a corrupt one is deleted and counted as a miss."""
        keys = self.keys(texts, instruction)
        count = len(texts)
        rows = Rows(
            np.empty((count, self.dimension), np.float32),
            np.zeros(count, np.int64),
            np.zeros(count, bool),
        )
        missing: dict[str, list[int]] = {}
        corrupt: list[bytes] = []
        for row, (key, data) in enumerate(zip(keys, self.store.get_many(keys), strict=True)):
            record = decode(key, data, self.dimension)
            if record is None:
                if data is not None:
                    corrupt.append(key)
                missing.setdefault(texts[row], []).append(row)
                continue
            rows.vectors[row] = record.vector
            rows.tokens[row] = record.tokens
            rows.truncated[row] = record.truncated
        if corrupt:
            self.store.delete(corrupt)
        if rows.truncated.any():  # the misses' truncation is reported when they are tokenized
            cut = rows.truncated_rows
            logger.warning(
                "%d of %d texts served from the embedding cache were truncated when they "
                "were embedded (rows %s%s)",
                len(cut),
                count,
                ", ".join(map(str, cut[:5])),
                ", ..." if len(cut) > 5 else "",
            )
        misses = sum(len(rows_of) for rows_of in missing.values())
        self._count(hits=count - misses, misses=misses, corrupt=len(corrupt))
        return Lookup(keys, rows, missing)

    def complete(self, lookup: Lookup, computed: Rows) -> Rows:
        """Fill the misses from ``computed`` (one row per missing text, in order); write them."""
        items: list[tuple[bytes, bytes]] = []
        for index, rows_of in enumerate(lookup.missing.values()):
            vector = computed.vectors[index]
            tokens, truncated = int(computed.tokens[index]), bool(computed.truncated[index])
            lookup.rows.vectors[rows_of] = vector
            lookup.rows.tokens[rows_of] = tokens
            lookup.rows.truncated[rows_of] = truncated
            key = lookup.keys[rows_of[0]]
            items.append((key, encode(key, Record(vector, tokens, truncated))))
        self.store.put_many(items)
        self._count(computed=len(items), writes=len(items))
        return lookup.rows

    def encode(
        self, texts: Sequence[str], instruction: str | None, compute: Callable[[list[str]], Rows]
    ) -> Rows:
        """Every text's row: hits from the store, misses from one ``compute`` call, written back.

        ``compute(texts)`` gets the distinct missing texts and returns their finished rows
        (it raises, writing nothing, when a vector is not finite).
        """
        lookup = self.lookup(texts, instruction)
        if not lookup.missing:
            return lookup.rows
        return self.complete(lookup, compute(list(lookup.missing)))

    def submit(
        self,
        texts: Sequence[str],
        instruction: str | None,
        run: Callable[[list[str]], concurrent.futures.Future[Encoded]],
        finish: Callable[[np.ndarray], np.ndarray],
    ) -> concurrent.futures.Future[Encoded]:
        """:meth:`encode` for the micro-batcher: ``run(missing)`` gives a future of their rows.

        ``finish`` turns the call's float32 rows (hits and misses together) into its output
        (precision). Cancelling the returned future cancels the misses' call.
        """
        from localembed.microbatch import Encoded

        lookup = self.lookup(texts, instruction)
        future: concurrent.futures.Future[Encoded] = concurrent.futures.Future()
        if not lookup.missing:
            try:
                _settle(future, result=_encoded(lookup.rows, Encoded, 0.0, finish))
            except Exception as failure:
                _settle(future, error=failure)
            return future
        inner = run(list(lookup.missing))

        def done(inner: concurrent.futures.Future[Encoded]) -> None:
            if inner.cancelled():
                future.cancel()
                return
            error = inner.exception()
            if error is not None:
                _settle(future, error=error)
                return
            encoded = inner.result()
            count = len(encoded.vectors)
            truncated = np.zeros(count, bool)
            truncated[list(encoded.truncated_rows)] = True
            try:
                rows = self.complete(
                    lookup, Rows(encoded.vectors, np.asarray(encoded.text_tokens), truncated)
                )
                result = _encoded(rows, Encoded, encoded.queue_seconds, finish)
            except Exception as failure:
                _settle(future, error=failure)
                return
            _settle(future, result=result)

        future.add_done_callback(lambda outer: outer.cancelled() and inner.cancel())
        inner.add_done_callback(done)
        return future

    # -- counters -----------------------------------------------------------------------

    def _count(self, **counts: int) -> None:
        with self._lock:
            for name, value in counts.items():
                self._counts[name] += value

    def stats(self) -> dict[str, int]:
        """Counters: this encoder's, and the store's as it is now.

        - ``hits``, ``misses`` (texts), ``computed`` (distinct missing texts sent to the
          model), ``corrupt`` (entries that failed their checksum, deleted and recomputed),
          ``writes``: this encoder's, since it was created;
        - ``entries``, ``bytes``, ``evictions``: the whole store's, shared with every
          process using it (a Redis server: its ``dbsize``, ``used_memory`` and
          ``evicted_keys``).
        """
        with self._lock:
            counts = dict(self._counts)
        entries, stored = self.store.size()
        return {
            **counts,
            "entries": entries,
            "bytes": stored,
            "evictions": self.store.evictions(),
        }


NOT_KEYED = frozenset(
    {
        # Covered by the model fingerprint or by the resolved values keyed instead.
        "model",
        "pooling",
        "normalize",
        "max_length",
        "dtype",
        "device",
        "query_instruction",
        "document_instruction",
        # Change no vector (batching is neighbour-independent; loading permissions).
        "batch_size",
        "max_batch_tokens",
        "threads",
        "allow_pickle_weights",
        "trust_remote_code",
        "cache",
        "cache_max_bytes",
    }
)
"""EncoderConfig fields left out of the key as such; every other field is keyed (a new
setting joins the key by default, and must be listed here to stay out of it)."""


_KEYED_BY_NAME = frozenset({"long_text", "truncate_dim", "backend", "quantize"})


def key_fields(encoder: KeyedEncoder) -> dict[str, object]:
    """What about ``encoder`` shapes a vector: every key field but the instruction."""
    import localembed

    config, settings = encoder.config, encoder.settings
    options = {
        # The context the encoder uses (a path is keyed by the content it read, not re-read).
        name: _key_value(name, getattr(encoder, "context", None) if name == "context" else value)
        for name, value in sorted(config.encoder_options().items())
        if name not in NOT_KEYED and name not in _KEYED_BY_NAME
    }
    return {
        "options": options,
        "localembed_version": localembed.__version__,
        "runtime_versions": runtime_versions(getattr(encoder.runtime, "name", config.backend)),
        "model_fingerprint": encoder.fingerprint,
        "pooling": settings.pooling,
        "normalize": settings.normalize,
        "max_length": settings.max_length,
        "long_text": config.long_text,
        "truncate_dim": config.truncate_dim,
        "dtype": str(encoder.dtype).removeprefix("torch."),
        "device_type": encoder.device.type,
        # The runtime that ran ("auto" resolves per machine: ONNX Runtime or torch).
        "backend": getattr(encoder.runtime, "name", config.backend),
        # The scheme, not only "int8": a changed quantization method gets new keys.
        "quantize": getattr(encoder.runtime, "quantization", None) or config.quantize,
        "stored": "float32-finished",
    }


def runtime_versions(backend: str) -> dict[str, str]:
    """The versions of the libraries that compute a vector on ``backend``.

    A new torch, transformers or ONNX Runtime can change the last bits of a vector (other
    kernels, another attention path) or the tokens (a tokenizer fix), so it gets new keys.

    Example:
        >>> sorted(runtime_versions("torch"))
        ['tokenizers', 'torch', 'transformers']

    """
    from importlib.metadata import PackageNotFoundError, version

    names = ["torch", "transformers", "tokenizers"]
    if backend == "onnx":
        names.append("onnxruntime")
    versions = {}
    for name in names:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = "absent"
    return versions


def _key_value(name: str, value: object) -> object:
    """A setting as the key sees it: by content where it names data (a CDE context)."""
    if name == "context" and value is not None:
        from localembed.corpus_context import as_context

        context = as_context(value)  # a path is keyed by the file's content, not its name
        return None if context is None else f"sha256:{context.digest()}"
    if isinstance(value, (str, int, float, bool, type(None))):
        return value
    digest = getattr(value, "digest", None)
    if callable(digest):
        return f"sha256:{digest()}"
    return repr(value)


def cache_namespace(encoder: KeyedEncoder, kind: str = "document") -> str:
    """A hex digest of everything that shapes ``encoder``'s ``kind`` vectors but the text.

    For another cache's namespace (LangChain's ``CacheBackedEmbeddings(namespace=...)``),
    so that it misses whenever this encoder's vectors would change.

    Example:
        >>> from localembed import get_encoder
        >>> encoder = get_encoder()
        >>> cache_namespace(encoder) == cache_namespace(get_encoder(truncate_dim=128))
        False

    """
    if kind not in ("document", "query"):
        msg = f"kind must be 'document' or 'query', got {kind!r}"
        raise InputError(msg)
    instruction = getattr(encoder.settings, f"{kind}_instruction") or ""
    return namespace_digest({**key_fields(encoder), "instruction": instruction}).hex()


def _encoded(
    rows: Rows,
    kind: type[Encoded],
    queue_seconds: float,
    finish: Callable[[np.ndarray], np.ndarray],
) -> Encoded:
    return kind(
        finish(rows.vectors),
        tokens=int(rows.tokens.sum()),
        truncated=int(rows.truncated.sum()),
        queue_seconds=queue_seconds,
        text_tokens=tuple(int(t) for t in rows.tokens),
        truncated_rows=rows.truncated_rows,
    )


def _settle(
    future: concurrent.futures.Future[Encoded],
    *,
    result: Encoded | None = None,
    error: BaseException | None = None,
) -> None:
    with contextlib.suppress(concurrent.futures.InvalidStateError):  # cancelled meanwhile
        if error is not None:
            future.set_exception(error)
        else:
            assert result is not None
            future.set_result(result)
