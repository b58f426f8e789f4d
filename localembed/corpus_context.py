"""The data of a CDE corpus context: :class:`CorpusContext`, its file, its checks (model layer).

The public face is :mod:`localembed.contextual` (what CDE is, how the pieces fit); this module
holds what the lower layers need too: the config validates ``context=`` with
:func:`as_context`, the settings and the backend chooser ask :func:`is_contextual`, the CDE
backend fingerprints its model (:func:`model_fingerprint`) and loads a tokenizer named by
``config.embedder`` (:func:`contextual_tokenizer`).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import struct
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from localembed import fingerprint
from localembed.errors import InputError

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedTokenizerBase

__all__ = [
    "CONTEXT_FORMAT",
    "ContextError",
    "CorpusContext",
    "as_context",
    "check_context",
    "contextual_tokenizer",
    "is_contextual",
    "load_context",
    "model_fingerprint",
    "no_context_message",
    "sample_indices",
]

CONTEXT_FORMAT = "localembed-cde-context/1"
"""The ``format`` of a context file's metadata; other values are refused."""

_METADATA_KEY = "localembed"
_ARRAY_KEY = "dataset_embeddings"
_INLINE_KEY = "inline_safetensors_base64"


class ContextError(InputError):
    """A CDE context is missing, made by another model, unreadable, or cannot be sampled."""


def is_contextual(model_config: PretrainedConfig | dict[str, Any]) -> bool:
    """Whether a model config describes a CDE model (it has ``transductive_corpus_size``).

    Example:
        >>> is_contextual({"transductive_corpus_size": 512})
        True

    """
    if isinstance(model_config, dict):
        return model_config.get("transductive_corpus_size") is not None
    return getattr(model_config, "transductive_corpus_size", None) is not None


@dataclass(frozen=True, eq=False)
class CorpusContext:
    """A CDE model's dataset embeddings of a corpus sample, with what made them.

    Two contexts are equal when their :meth:`digest` is (the same model and vectors): an
    encoder's settings hold the context as a key, so equal contexts (the same file loaded twice,
    an adapter restored by ``from_dict``) share one encoder. Build one with
    ``encoder.build_context(corpus)``; save it with :meth:`save`, read it with
    :func:`load_context`.
    """

    embeddings: np.ndarray
    """(size, dimension) float32: the first stage's output for the sample, in sample order."""
    model: str
    """The model that made it (as the user named it; for messages)."""
    fingerprint: str
    """The model's fingerprint (:func:`model_fingerprint`): the check that it is that model."""
    seed: int | None = None
    """The sampling seed (None: the documents were given as the sample)."""
    corpus_size: int = 0
    """How many documents the corpus had."""
    indices: tuple[int, ...] = ()
    """The corpus rows sampled, in sample order."""
    document_instruction: str = ""
    """The prefix the sample was embedded with."""
    max_length: int = 0
    """Tokens kept per sampled document."""
    path: str | None = field(default=None, compare=False)
    """The file it was saved to or loaded from (None: only in memory)."""

    def __post_init__(self) -> None:
        array = np.ascontiguousarray(self.embeddings, dtype=np.float32)
        if array.ndim != 2 or array.shape[0] < 1 or array.shape[1] < 1:
            msg = (
                f"a context's embeddings must be a non-empty (size, dimension) array, "
                f"got shape {array.shape}"
            )
            raise ContextError(msg)
        if not np.isfinite(array).all():
            rows = np.flatnonzero(~np.isfinite(array).all(axis=1)).tolist()
            msg = f"a context's embeddings hold NaN or infinite values (rows {rows[:5]})"
            raise ContextError(msg)
        array.setflags(write=False)
        object.__setattr__(self, "embeddings", array)

    @property
    def size(self) -> int:
        """How many dataset embeddings it has."""
        return int(self.embeddings.shape[0])

    @property
    def dimension(self) -> int:
        """Their width."""
        return int(self.embeddings.shape[1])

    def metadata(self) -> dict[str, Any]:
        """What the file's header records (everything but the array)."""
        return {
            "format": CONTEXT_FORMAT,
            "model": self.model,
            "fingerprint": self.fingerprint,
            "seed": self.seed,
            "size": self.size,
            "dimension": self.dimension,
            "corpus_size": self.corpus_size,
            "indices": list(self.indices),
            "document_instruction": self.document_instruction,
            "max_length": self.max_length,
        }

    def digest(self) -> str:
        """A sha256 of the dataset embeddings and the fingerprint: equal digests, same vectors.

        Computed once (the array is read-only).
        """
        known: str | None = self.__dict__.get("_digest")
        if known is None:
            data = hashlib.sha256(self.fingerprint.encode("utf-8") + b"\0")
            data.update(str(self.embeddings.shape).encode("ascii"))
            data.update(np.ascontiguousarray(self.embeddings, dtype="<f4").tobytes())
            known = data.hexdigest()
            object.__setattr__(self, "_digest", known)
        return known

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CorpusContext):
            return NotImplemented
        return self.digest() == other.digest()

    def __hash__(self) -> int:
        return hash(self.digest())

    def to_bytes(self) -> bytes:
        """The file's bytes: safetensors with the metadata as JSON in its header."""
        from safetensors.numpy import save

        header = {_METADATA_KEY: json.dumps(self.metadata(), ensure_ascii=False)}
        data: bytes = save({_ARRAY_KEY: np.array(self.embeddings)}, metadata=header)
        return data

    @classmethod
    def from_bytes(cls, data: bytes, *, path: str | None = None) -> CorpusContext:
        """Read a context from :meth:`to_bytes`'s bytes (no pickle: an array and JSON).

        Raises:
            ContextError: not a localembed context file, or one it cannot read.
        """
        from safetensors.numpy import load

        where = path or "the context data"
        try:
            metadata = _header_metadata(data)
            tensors = load(data)
        except Exception as error:
            msg = (
                f"{where} is not a localembed context file (safetensors with a "
                f"'{_METADATA_KEY}' header): {type(error).__name__}: {error}"
            )
            raise ContextError(msg) from error
        if metadata.get("format") != CONTEXT_FORMAT or _ARRAY_KEY not in tensors:
            msg = (
                f"{where} is not a localembed context file: format "
                f"{metadata.get('format')!r}, expected {CONTEXT_FORMAT!r} with a "
                f"{_ARRAY_KEY!r} array; build one with encoder.build_context(corpus).save(path)"
            )
            raise ContextError(msg)
        embeddings = tensors[_ARRAY_KEY]
        if embeddings.shape != (metadata.get("size"), metadata.get("dimension")):
            msg = (
                f"{where} is inconsistent: its array has shape {embeddings.shape} but its "
                f"metadata says size={metadata.get('size')}, "
                f"dimension={metadata.get('dimension')}"
            )
            raise ContextError(msg)
        seed = metadata.get("seed")
        return cls(
            embeddings=embeddings,
            model=str(metadata.get("model", "")),
            fingerprint=str(metadata.get("fingerprint", "")),
            seed=None if seed is None else int(seed),
            corpus_size=int(metadata.get("corpus_size", 0)),
            indices=tuple(int(i) for i in metadata.get("indices", ())),
            document_instruction=str(metadata.get("document_instruction", "")),
            max_length=int(metadata.get("max_length", 0)),
            path=path,
        )

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the context to ``path`` (replaced atomically); returns the path.

        The file is safetensors: the dataset embeddings as a float32 array and, in its
        header, JSON metadata (model, fingerprint, seed, sampled rows, prefix, max_length).
        It is remembered as this context's :attr:`path`.
        """
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
        try:
            with os.fdopen(handle, "wb") as stream:
                stream.write(self.to_bytes())
            Path(temporary).replace(target)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        object.__setattr__(self, "path", str(target.resolve()))
        return target

    def serialized(self) -> str | dict[str, str]:
        """How a config stores it: its file path when it has one, else its bytes inline.

        A path keeps a serialized adapter small (a 512 x 768 context is 1.5 MB); an unsaved
        context is stored whole (base64 of :meth:`to_bytes`), so that loading the
        serialized adapter never silently loses the context.
        """
        if self.path is not None:
            return self.path
        return {_INLINE_KEY: base64.b64encode(self.to_bytes()).decode("ascii")}

    def __repr__(self) -> str:
        where = f", path={self.path!r}" if self.path else ""
        return (
            f"CorpusContext(model={self.model!r}, size={self.size}, "
            f"dimension={self.dimension}, seed={self.seed}{where})"
        )


def _header_metadata(data: bytes) -> dict[str, Any]:
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + length].decode("utf-8"))
    raw = header.get("__metadata__", {}).get(_METADATA_KEY)
    if raw is None:
        msg = f"no {_METADATA_KEY!r} metadata in the safetensors header"
        raise KeyError(msg)
    metadata = json.loads(raw)
    if not isinstance(metadata, dict):
        msg = "the metadata is not a JSON object"
        raise TypeError(msg)
    return metadata


def load_context(path: str | os.PathLike[str]) -> CorpusContext:
    """Read a context saved with :meth:`CorpusContext.save`.

    Raises:
        ContextError: the file is missing or is not a localembed context file.
    """
    target = Path(path)
    try:
        data = target.read_bytes()
    except OSError as error:
        msg = (
            f"cannot read the context file {str(target)!r}: {error.strerror or error}; "
            f"build one with encoder.build_context(corpus).save(path) (CLI: localembed embed "
            f"--build-context N)"
        )
        raise ContextError(msg) from error
    return CorpusContext.from_bytes(data, path=str(target.resolve()))


def as_context(value: Any) -> CorpusContext | None:
    """A ``context=`` value as a :class:`CorpusContext`: itself, a file path, or inline data.

    Raises:
        ContextError: a path that is not a context file.
        InputError: any other type.
    """
    if value is None or isinstance(value, CorpusContext):
        return value
    if isinstance(value, (str, os.PathLike)):
        return load_context(value)
    if isinstance(value, dict) and set(value) == {_INLINE_KEY}:
        return CorpusContext.from_bytes(base64.b64decode(value[_INLINE_KEY]))
    msg = (
        f"context must be a CorpusContext, the path of a context file, or None, got "
        f"{type(value).__name__}"
    )
    raise InputError(msg)


def check_context(context: CorpusContext, fingerprint: str, model: str) -> None:
    """Refuse a context made by another model than the one (``fingerprint``) using it.

    Raises:
        ContextError: the fingerprints differ (names both models).
    """
    if context.fingerprint != fingerprint:
        where = f" ({context.path})" if context.path else ""
        msg = (
            f"the context{where} was built by model {context.model!r} (fingerprint "
            f"{context.fingerprint[:12]}) and cannot be used with model {model!r} (fingerprint "
            f"{fingerprint[:12]}): dataset embeddings belong to the model that made them; "
            f"build a context with this model: get_encoder(model={model!r}, "
            f"trust_remote_code=True).build_context(corpus)"
        )
        raise ContextError(msg)


def no_context_message(model: str) -> str:
    """What to do when a CDE model is asked for vectors without a context."""
    return (
        f"{model} is a contextual document embedding (CDE) model: it embeds documents and "
        f"queries given dataset embeddings of a sample of your corpus, and has no context yet. "
        f"Build one once and reuse it: ctx = encoder.build_context(corpus); ctx.save(path); "
        f"then get_encoder(model=..., context=path, trust_remote_code=True) (adapters: "
        f"context=path, or .fit_context(corpus); CLI: localembed embed --context FILE or "
        f"--build-context N)"
    )


def sample_indices(
    corpus_size: int, size: int, seed: int, *, oversample: bool = False
) -> list[int]:
    """The corpus rows of a seeded sample of ``size`` documents (see the module docstring).

    Example:
        >>> sample_indices(10, 3, seed=0)
        [6, 9, 0]
        >>> sample_indices(2, 5, seed=0, oversample=True)
        [0, 1, 0, 1, 1]

    Raises:
        ContextError: ``size`` < 1, or a corpus smaller than ``size`` without ``oversample``.
    """
    if size < 1:
        msg = f"the context size must be at least 1, got {size}"
        raise ContextError(msg)
    if corpus_size < 1:
        msg = "cannot build a context from an empty corpus"
        raise ContextError(msg)
    draw = random.Random(seed)
    if corpus_size >= size:
        return draw.sample(range(corpus_size), size)
    if not oversample:
        msg = (
            f"the corpus has {corpus_size} documents, fewer than the context's {size}: pass "
            f"oversample=True to repeat documents (the model card's advice; CLI: "
            f"--oversample-context), or a smaller size=... (the model then sees fewer "
            f"context documents than it was trained with)"
        )
        raise ContextError(msg)
    repeats, rest = divmod(size, corpus_size)
    return list(range(corpus_size)) * repeats + sorted(draw.sample(range(corpus_size), rest))


def model_fingerprint(directory: Path, tokenizer: PreTrainedTokenizerBase | None = None) -> str:
    """The model's content fingerprint (:mod:`localembed.fingerprint`) with its tokenizer.

    A CDE model may take its tokenizer from another directory (``config.embedder``), so the
    tokenizer's own serialization joins the directory's content hash.
    """
    base = fingerprint.model_fingerprint(directory)
    if tokenizer is None:
        return base
    backend = getattr(tokenizer, "backend_tokenizer", None)
    tokenizer_text = backend.to_str() if backend is not None else str(tokenizer.get_vocab())
    digest = hashlib.sha256(base.encode("ascii") + b"\0")
    digest.update(tokenizer_text.encode("utf-8"))
    return digest.hexdigest()


def contextual_tokenizer(
    directory: Path, model_config: Any, trust_remote_code: bool
) -> PreTrainedTokenizerBase:
    """A CDE model's tokenizer: its own directory's, else the one ``config.embedder`` names.

    The released models ship no tokenizer: their card loads ``bert-base-uncased``'s (v1) or
    ModernBERT's (v2), the backbone that ``config.embedder`` names. Only the tokenizer files
    of that repository are read (from the hub cache, or downloaded when online).

    Raises:
        ModelFileError: no tokenizer in the directory and none loadable from ``embedder``.
    """
    from localembed.model_errors import ModelFileError
    from localembed.model_origins import display_path
    from localembed.transformers_files import TOKENIZER_VOCAB_FILES, load_tokenizer

    if any((directory / name).is_file() for name in TOKENIZER_VOCAB_FILES):
        return load_tokenizer(directory, trust_remote_code=trust_remote_code)
    embedder = getattr(model_config, "embedder", None)
    if not isinstance(embedder, str) or not embedder:
        msg = (
            f"no tokenizer in {display_path(directory)} and its config.json names none "
            f"(config.embedder): a CDE model's card names the tokenizer to use; put its "
            f"tokenizer files in the model directory"
        )
        raise ModelFileError(msg)
    from transformers import AutoTokenizer

    try:
        tokenizer: PreTrainedTokenizerBase = AutoTokenizer.from_pretrained(embedder, use_fast=True)
    except Exception as error:
        msg = (
            f"{display_path(directory)} has no tokenizer of its own and its config.embedder "
            f"{embedder!r} cannot be loaded ({type(error).__name__}: {error}); download it "
            f"once while online (or copy its tokenizer files into the model directory)"
        )
        raise ModelFileError(msg) from error
    return tokenizer
