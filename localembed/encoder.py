"""LocalEncoder: tokenize -> length-sorted batches -> forward -> pool -> normalize.

``get_encoder`` returns one shared instance per configuration, so a LangChain and a
LlamaIndex adapter with the same settings hold one model in memory.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, overload

import numpy as np

from localembed.batching import pad_right, plan_batches, run_batches, token_budget
from localembed.config import EncoderConfig
from localembed.loading import (
    load_model_config,
    load_tokenizer,
    locate_model,
    read_sentence_transformers_metadata,
)
from localembed.pooling import pool
from localembed.presets import apply_instruction, find_preset
from localembed.runtimes import check_speed_options, load_runtime
from localembed.sharing import SharedModels

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel

    from localembed.m3 import FlagEmbeddingBackend, M3Output
    from localembed.microbatch import MicroBatcher
    from localembed.runtimes import Runtime

logger = logging.getLogger("localembed")

# Models whose position ids start after the padding index (RoBERTa-style): usable length is
# max_position_embeddings - (pad_token_id + 1).
_OFFSET_POSITION_MODELS = frozenset(
    {"roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "mpnet", "data2vec-text"}
)
_DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}

Output = Literal["sentence_embedding", "token_embeddings"]
OUTPUTS: tuple[str, ...] = ("sentence_embedding", "token_embeddings")


def check_texts(texts: Any) -> list[str]:
    r"""Return ``texts`` as a list of str, or raise TypeError naming the first bad item.

    A bare str or bytes (which would otherwise be embedded character by character), a
    mapping or a set (no input order to match the output rows to), None and other
    non-iterables are a TypeError. Lone surrogates (invalid unicode, e.g. from
    ``errors="surrogateescape"`` or a broken ``\ud83d`` JSON escape), which tokenizers
    cannot encode, are replaced with U+FFFD (a surrogate pair becomes its character) and
    counted in one warning per call.

    Example:
        >>> check_texts(["a", 1])
        Traceback (most recent call last):
        ...
        TypeError: item 1 is int, not str; every text must be a str
        >>> check_texts(["ok", "bad \udc80 byte"])
        ['ok', 'bad \ufffd byte']

    """
    from collections.abc import Mapping

    if isinstance(texts, (str, bytes, bytearray)):
        msg = f"expected a list of str, got a single {type(texts).__name__}; wrap it: [text]"
        raise TypeError(msg)
    if isinstance(texts, (Mapping, set, frozenset)):
        msg = (
            f"expected a list of str, got {type(texts).__name__}, whose items have no position "
            f"for output row i to match; pass a list"
        )
        raise TypeError(msg)
    try:
        items = list(texts)
    except TypeError:
        msg = f"expected a list of str, got {type(texts).__name__}"
        raise TypeError(msg) from None
    repaired = 0
    for index, item in enumerate(items):
        if not isinstance(item, str):
            msg = f"item {index} is {type(item).__name__}, not str; every text must be a str"
            raise TypeError(msg)
        if not item.isascii():
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                # UTF-16 round trip: a high+low surrogate pair becomes the character it
                # encodes, and every lone surrogate becomes U+FFFD.
                surrogates = item.encode("utf-16-le", "surrogatepass")
                items[index] = surrogates.decode("utf-16-le", "replace")
                repaired += 1
    if repaired:
        logger.warning(
            "%d of %d texts contained invalid unicode (lone surrogates); "
            "each was replaced with U+FFFD before embedding",
            repaired,
            len(items),
        )
    return items


def check_text(text: Any, what: str = "query") -> str:
    """Return ``text`` if it is a str, else raise TypeError naming ``what``.

    Invalid unicode in it is repaired later, by :func:`check_texts` (the encoder's entry).
    """
    if not isinstance(text, str):
        msg = f"{what} must be a str, got {type(text).__name__}"
        raise TypeError(msg)
    return text


def resolve_device(device: str) -> torch.device:
    """Turn "auto" into cuda, then mps, then cpu; check that a named accelerator exists."""
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        msg = f"device {device!r} requested but CUDA is not available; use device='cpu' or 'auto'"
        raise ValueError(msg)
    if resolved.type == "mps" and not torch.backends.mps.is_available():
        msg = f"device {device!r} requested but MPS is not available; use device='cpu' or 'auto'"
        raise ValueError(msg)
    return resolved


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """Turn "auto" into float32 on CPU/MPS (exact) and float16 on CUDA."""
    import torch

    if dtype == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    resolved: torch.dtype = getattr(torch, _DTYPES[dtype])
    return resolved


def padding_id(tokenizer: Any) -> int:
    """The id to pad with: the tokenizer's pad token, else its end-of-sequence token."""
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if candidate is not None:
            return int(candidate)
    return 0  # padded positions are masked out, so any id works


def model_length_limit(tokenizer: Any, model_config: Any) -> int | None:
    """The most tokens the model takes: its tokenizer's limit and its position embeddings.

    RoBERTa-style models lose ``pad_token_id + 1`` positions (their position ids start after
    the padding index). None when neither says.
    """
    limits = []
    tokenizer_limit = tokenizer.model_max_length
    if isinstance(tokenizer_limit, int) and tokenizer_limit < 1_000_000:
        limits.append(tokenizer_limit)
    positions = getattr(model_config, "max_position_embeddings", None)
    if positions:
        if model_config.model_type in _OFFSET_POSITION_MODELS:
            positions -= (model_config.pad_token_id or 0) + 1
        limits.append(positions)
    return min(limits) if limits else None


@dataclass(frozen=True)
class ResolvedSettings:
    """What the encoder actually does, after arguments, model metadata and presets."""

    pooling: str
    normalize: bool
    query_instruction: str
    document_instruction: str
    max_length: int
    sources: dict[str, str]
    """Where each setting came from: argument, sentence-transformers, preset, model, fallback."""


CHARS_PER_TOKEN_BOUND = 64
"""With long_text="truncate", texts are cut to max_length * 64 characters before tokenizing."""

CHUNK_OVERLAP_DIVISOR = 8
"""With long_text="chunk", consecutive windows share max_length // 8 tokens."""


@dataclass(frozen=True)
class Tokenized:
    """Texts as model-ready token windows (no padding)."""

    ids: list[list[int]]
    """Token ids of each window, special tokens included."""
    owners: list[int]
    """Index of the text each window belongs to (ascending)."""
    count: int
    """Number of texts."""
    truncated: int
    """Texts cut to max_length (long_text="truncate")."""
    chunked: bool
    """Whether some text was split into several windows (long_text="chunk")."""


@dataclass(frozen=True)
class ForwardBatch:
    """One forward pass: the transformer's last hidden states and what went in."""

    hidden: torch.Tensor
    """(rows, width, hidden) last hidden states; padded positions are meaningless."""
    attention_mask: torch.Tensor
    """(rows, width), 1 for real tokens; padding is on the right."""
    input_ids: torch.Tensor
    """(rows, width) token ids."""


class TokenEmbeddings(NamedTuple):
    """One text's tokens and their contextual vectors (``encode(..., output="token_embeddings")``).

    Unpacks as ``tokens, vectors = result``.
    """

    tokens: list[str]
    """The tokenizer's pieces, special tokens (such as ``[CLS]``) and instruction included."""
    vectors: np.ndarray
    """(len(tokens), dimension) float32 last hidden states, not pooled or normalized."""


class LocalEncoder:
    """A loaded model that turns texts into float32 vectors, row i for text i.

    Use :func:`get_encoder` rather than this constructor, so that equal settings share
    one model.

    Example:
        >>> from localembed import get_encoder
        >>> encoder = get_encoder()
        >>> vectors = encoder.encode(["a cat", "a dog"])
        >>> vectors.shape, vectors.dtype
        ((2, 384), dtype('float32'))

    """

    def __init__(self, config: EncoderConfig) -> None:
        self.config = config
        self.source = locate_model(config.model, allow_pickle_weights=config.allow_pickle_weights)
        metadata = read_sentence_transformers_metadata(self.source.path)
        if metadata.unsupported_modules:
            msg = (
                f"{self.source.name}: sentence-transformers modules "
                f"{', '.join(metadata.unsupported_modules)} are not supported by localembed "
                f"(only Transformer, one Pooling mode, Normalize)"
            )
            raise ValueError(msg)
        self.device = resolve_device(config.device)
        self.dtype = resolve_dtype(config.dtype, self.device)
        self.tokenizer = load_tokenizer(
            metadata.transformer_path, trust_remote_code=config.trust_remote_code
        )
        self.model_config = load_model_config(
            metadata.transformer_path, trust_remote_code=config.trust_remote_code
        )
        self.settings = self._resolve_settings(metadata)
        self.dimension: int = int(self.model_config.hidden_size)
        self._pad_id = padding_id(self.tokenizer)
        self._forward_lock = threading.Lock()
        self._batcher: MicroBatcher | None = None
        # backend="flagembedding": FlagEmbedding's own model does the work (see localembed.m3).
        self.reference_backend: FlagEmbeddingBackend | None = None
        self.model: PreTrainedModel | None = None
        self.runtime: Runtime | None = None
        check_speed_options(config, config.backend, self.device, self.dtype)
        if config.backend == "flagembedding":
            from localembed.m3 import FlagEmbeddingBackend

            self.reference_backend = FlagEmbeddingBackend(self)
        else:
            self.runtime, self.model = load_runtime(
                metadata.transformer_path,
                self.model_config,
                config,
                backend=config.backend,
                device=self.device,
                dtype=self.dtype,
            )

    # -- settings -------------------------------------------------------------------------

    def _resolve_settings(self, metadata: Any) -> ResolvedSettings:
        config = self.config
        names = [self.source.name, str(self.source.path)]
        name_or_path = getattr(self.model_config, "_name_or_path", "")
        if name_or_path:
            names.append(str(name_or_path))
        preset = find_preset(*names)
        sources: dict[str, str] = {}

        if config.pooling != "auto":
            pooling, sources["pooling"] = config.pooling, "argument"
        elif metadata.pooling:
            pooling, sources["pooling"] = metadata.pooling, "sentence-transformers"
        elif preset:
            pooling, sources["pooling"] = preset.pooling, f"preset {preset.family}"
        else:
            pooling, sources["pooling"] = "cls", "fallback"
            logger.info(
                "%s: no pooling in the model's metadata and no family preset; using cls pooling "
                "(pass pooling=... to choose)",
                self.source.name,
            )

        instructions = {}
        for kind, explicit, saved_keys in (
            ("query", config.query_instruction, ("query",)),
            ("document", config.document_instruction, ("document", "passage", "corpus")),
        ):
            saved = next((metadata.prompts[k] for k in saved_keys if k in metadata.prompts), None)
            if explicit is not None:
                instructions[kind], sources[f"{kind}_instruction"] = explicit, "argument"
            elif saved is not None:
                instructions[kind], sources[f"{kind}_instruction"] = saved, "saved prompts"
            elif preset:
                instructions[kind] = preset.instruction(kind)
                sources[f"{kind}_instruction"] = f"preset {preset.family}"
            else:
                instructions[kind], sources[f"{kind}_instruction"] = "", "none"

        limit = model_length_limit(self.tokenizer, self.model_config)
        if config.max_length is not None:
            if limit is not None and config.max_length > limit:
                msg = f"max_length={config.max_length} exceeds the model's limit of {limit} tokens"
                raise ValueError(msg)
            max_length, sources["max_length"] = config.max_length, "argument"
        elif metadata.max_seq_length:
            max_length, sources["max_length"] = metadata.max_seq_length, "sentence-transformers"
        elif preset and preset.max_length:
            max_length, sources["max_length"] = preset.max_length, f"preset {preset.family}"
        elif limit is not None:
            max_length, sources["max_length"] = limit, "model"
        else:
            max_length, sources["max_length"] = 512, "fallback"
        if limit is not None:
            max_length = min(max_length, limit)

        sources["normalize"] = "argument" if "normalize" in config.model_fields_set else "default"
        return ResolvedSettings(
            pooling=pooling,
            normalize=config.normalize,
            query_instruction=instructions["query"],
            document_instruction=instructions["document"],
            max_length=max_length,
            sources=sources,
        )

    def describe(self) -> dict[str, Any]:
        """The resolved settings, as ``localembed info`` prints them."""
        settings = self.settings
        return {
            "model": self.source.name,
            "path": str(self.source.path),
            "architecture": self.model_config.model_type,
            "dimension": self.dimension,
            "pooling": settings.pooling,
            "normalize": settings.normalize,
            "max_length": settings.max_length,
            "query_instruction": settings.query_instruction,
            "document_instruction": settings.document_instruction,
            "device": str(self.device),
            "dtype": str(self.dtype).removeprefix("torch."),
            "sources": dict(settings.sources),
        }

    # -- encoding -------------------------------------------------------------------------

    @overload
    def encode(
        self,
        texts: Sequence[str],
        instruction: str | None = None,
        *,
        output: Literal["sentence_embedding"] = "sentence_embedding",
        batch_size: int | None = None,
        show_progress: bool = False,
    ) -> np.ndarray: ...

    @overload
    def encode(
        self,
        texts: Sequence[str],
        instruction: str | None = None,
        *,
        output: Literal["token_embeddings"],
        batch_size: int | None = None,
        show_progress: bool = False,
    ) -> list[TokenEmbeddings]: ...

    def encode(
        self,
        texts: Sequence[str],
        instruction: str | None = None,
        *,
        output: Output = "sentence_embedding",
        batch_size: int | None = None,
        show_progress: bool = False,
    ) -> np.ndarray | list[TokenEmbeddings]:
        """Embed ``texts`` as they are (or through ``instruction``); row i belongs to texts[i].

        Args:
            texts: the texts; an empty list gives a (0, dimension) array without a model call.
            instruction: a prefix, or a template containing ``{text}``, applied to every text.
            output: ``"sentence_embedding"`` (one pooled vector per text) or
                ``"token_embeddings"`` (per text: its tokens and their hidden states, see
                :class:`TokenEmbeddings`; for analysis and plots).
            batch_size: texts per forward pass; default: the configured ``batch_size``.
            show_progress: show a tqdm progress bar over the texts.

        Returns:
            A float32 array of shape (len(texts), dimension), or with
            ``output="token_embeddings"`` a list with one :class:`TokenEmbeddings` per text.

        Raises:
            TypeError: ``texts`` is not a list of str; the message names the first bad index.
            ValueError: an unknown ``output``, or token output where it is not defined.

        Example:
            >>> from localembed import get_encoder
            >>> tokens, vectors = get_encoder().encode(["Cats purr"], output="token_embeddings")[0]
            >>> tokens, vectors.shape
            (['[CLS]', 'cats', 'pu', '##rr', '[SEP]'], (5, 384))

        """
        import torch

        if output not in OUTPUTS:
            msg = f"output must be one of {', '.join(map(repr, OUTPUTS))}, got {output!r}"
            raise ValueError(msg)
        if output == "token_embeddings":
            return self._token_embeddings(texts, instruction, batch_size, show_progress)
        if self.reference_backend is not None:
            items = [apply_instruction(instruction or "", text) for text in check_texts(texts)]
            return self.reference_backend.encode_m3(items, dense=True).dense_array()
        tokenized = self.tokenize(texts, instruction)
        rows = np.empty((len(tokenized.ids), self.dimension), dtype=np.float32)

        def pool_batch(indices: list[int], batch: ForwardBatch) -> None:
            vectors = pool(self.settings.pooling, batch.hidden, batch.attention_mask).float()
            if self.settings.normalize and not tokenized.chunked:
                vectors = torch.nn.functional.normalize(vectors, p=2, dim=-1)
            rows[indices] = vectors.cpu().numpy()

        self.run_batches(tokenized, pool_batch, batch_size=batch_size, show_progress=show_progress)
        if not tokenized.chunked:
            return rows
        return self.combine_windows(rows, tokenized)

    def _token_embeddings(
        self,
        texts: Sequence[str],
        instruction: str | None,
        batch_size: int | None,
        show_progress: bool,
    ) -> list[TokenEmbeddings]:
        if self.runtime is None:
            msg = "output='token_embeddings' needs backend='torch' or 'onnx'"
            raise ValueError(msg)
        if self.config.long_text == "chunk":
            # Overlapping windows have no single token sequence to return.
            msg = "output='token_embeddings' returns one window per text: use long_text='truncate'"
            raise ValueError(msg)
        tokenized = self.tokenize(texts, instruction)
        results: list[TokenEmbeddings | None] = [None] * tokenized.count

        def keep_tokens(indices: list[int], batch: ForwardBatch) -> None:
            hidden = batch.hidden.float().cpu().numpy()
            for row, index in enumerate(indices):
                ids = tokenized.ids[index]
                tokens = self.tokenizer.convert_ids_to_tokens(ids)
                results[index] = TokenEmbeddings(list(tokens), hidden[row, : len(ids)].copy())

        self.run_batches(tokenized, keep_tokens, batch_size=batch_size, show_progress=show_progress)
        return [result for result in results if result is not None]

    def encode_m3(
        self,
        texts: Sequence[str],
        *,
        dense: bool = True,
        sparse: bool = False,
        colbert: bool = False,
        instruction: str | None = None,
        batch_size: int | None = None,
        show_progress: bool = False,
    ) -> M3Output:
        """bge-m3's dense, sparse (lexical weights) and multi-vector (ColBERT) outputs.

        One forward pass per batch computes every requested output; those not requested are
        None. See :mod:`localembed.m3`.
        """
        from localembed.m3 import encode_m3

        return encode_m3(
            self,
            texts,
            dense=dense,
            sparse=sparse,
            colbert=colbert,
            instruction=instruction,
            batch_size=batch_size,
            show_progress=show_progress,
        )

    def encode_queries(
        self,
        texts: Sequence[str],
        *,
        batch_size: int | None = None,
        show_progress: bool = False,
    ) -> np.ndarray:
        """Embed search queries with the query instruction (see :meth:`encode`).

        Without ``batch_size`` and progress bar, concurrent calls share forward passes
        (see :attr:`batcher`).
        """
        if batch_size is None and not show_progress and self.runtime is not None:
            return self.batcher.encode(texts, self.settings.query_instruction)
        return self.encode(
            texts,
            self.settings.query_instruction,
            batch_size=batch_size,
            show_progress=show_progress,
        )

    def encode_documents(
        self,
        texts: Sequence[str],
        *,
        batch_size: int | None = None,
        show_progress: bool = False,
    ) -> np.ndarray:
        """Embed documents with the document instruction (see :meth:`encode`).

        Without ``batch_size`` and progress bar, concurrent calls share forward passes
        (see :attr:`batcher`).
        """
        if batch_size is None and not show_progress and self.runtime is not None:
            return self.batcher.encode(texts, self.settings.document_instruction)
        return self.encode(
            texts,
            self.settings.document_instruction,
            batch_size=batch_size,
            show_progress=show_progress,
        )

    async def aencode_queries(self, texts: Sequence[str]) -> np.ndarray:
        """Async :meth:`encode_queries`: merged with concurrent calls, the event loop stays free."""
        return await self._aencode(texts, self.settings.query_instruction)

    async def aencode_documents(self, texts: Sequence[str]) -> np.ndarray:
        """Async :meth:`encode_documents`: merged with concurrent calls, the loop stays free."""
        return await self._aencode(texts, self.settings.document_instruction)

    async def _aencode(self, texts: Sequence[str], instruction: str) -> np.ndarray:
        if self.runtime is None:  # backend="flagembedding" runs its own batches
            import asyncio

            return await asyncio.to_thread(self.encode, texts, instruction)
        return await self.batcher.aencode(texts, instruction)

    @property
    def batcher(self) -> MicroBatcher:
        """The micro-batcher of this encoder (one worker merging concurrent calls).

        ``encode_queries``, ``encode_documents``, their async forms and the server go
        through it; see :mod:`localembed.microbatch`.
        """
        if self._batcher is None:
            from localembed.microbatch import MicroBatcher

            with self._forward_lock:
                if self._batcher is None:
                    self._batcher = MicroBatcher(self)
        return self._batcher

    def tokenize(self, texts: Sequence[str], instruction: str | None = None) -> Tokenized:
        """Check, instruct and tokenize ``texts`` into model-ready windows (no padding).

        With ``long_text="truncate"`` each text gives one window (its first ``max_length``
        tokens) and over-long texts are counted and warned about; with ``"chunk"`` an
        over-long text gives several overlapping windows.
        """
        items = check_texts(texts)
        if instruction:
            items = [apply_instruction(instruction, text) for text in items]
        if not items:
            return Tokenized(ids=[], owners=[], count=0, truncated=0, chunked=False)
        chunked = self.config.long_text == "chunk"
        max_length = self.settings.max_length
        if chunked:
            windows, owners = self._windows(items, chunked=True)
        else:
            # Tokenizing a 5 MB string only to keep its first max_length tokens takes seconds:
            # cut very long texts first, and re-read them whole in the rare case the cut
            # text no longer overflows (extremely long "words").
            limit = max_length * CHARS_PER_TOKEN_BOUND
            windows, owners = self._windows([text[:limit] for text in items], chunked=False)
            counts = Counter(owners)
            if any(len(text) > limit and counts[i] == 1 for i, text in enumerate(items)):
                windows, owners = self._windows(items, chunked=False)
        over_long = sum(count > 1 for count in Counter(owners).values())
        if set(owners) != set(range(len(items))):
            msg = "the tokenizer returned no tokens for some texts"
            raise RuntimeError(msg)
        if chunked:
            return Tokenized(windows, owners, len(items), truncated=0, chunked=over_long > 0)
        first = [i for i, owner in enumerate(owners) if i == 0 or owners[i - 1] != owner]
        if over_long:
            logger.warning(
                "%d of %d texts were longer than %d tokens and were truncated",
                over_long,
                len(items),
                max_length,
            )
        return Tokenized(
            ids=[windows[i] for i in first],
            owners=list(range(len(items))),
            count=len(items),
            truncated=over_long,
            chunked=False,
        )

    def _windows(self, items: list[str], *, chunked: bool) -> tuple[list[list[int]], list[int]]:
        max_length = self.settings.max_length
        encoded = self.tokenizer(
            items,
            truncation=True,
            max_length=max_length,
            stride=max_length // CHUNK_OVERLAP_DIVISOR if chunked else 0,
            return_overflowing_tokens=True,
            return_attention_mask=False,
            return_token_type_ids=False,
        )
        return encoded["input_ids"], encoded["overflow_to_sample_mapping"]

    def batches(self, ids: list[list[int]], batch_size: int | None = None) -> list[list[int]]:
        """Group window indices into batches (see :func:`localembed.batching.plan_batches`)."""
        budget = token_budget(self.config.max_batch_tokens, self.device)
        return plan_batches([len(w) for w in ids], batch_size or self.config.batch_size, budget)

    def run_batches(
        self,
        tokenized: Tokenized,
        consume: Callable[[list[int], ForwardBatch], None],
        *,
        batch_size: int | None = None,
        show_progress: bool = False,
    ) -> None:
        """Run the model over ``tokenized`` in batches, handing each result to ``consume``.

        ``consume(indices, batch)`` gets the window indices of the batch (rows of
        ``batch.hidden``, in that order) and the forward result; it must write its results
        by index, because a batch that runs out of memory is split in halves and each half
        is run (and consumed) again, down to one window (see :mod:`localembed.batching`).

        Raises:
            EncoderOutOfMemoryError: one window alone does not fit in memory; the message
                names the batch, its tokens and the fix. Nothing partial is returned.
        """

        def step(indices: list[int]) -> None:
            consume(indices, self.forward([tokenized.ids[i] for i in indices]))

        run_batches(
            [len(ids) for ids in tokenized.ids],
            step,
            batch_size=batch_size or self.config.batch_size,
            max_batch_tokens=self.config.max_batch_tokens,
            device=self.device,
            max_length=self.settings.max_length,
            show_progress=show_progress,
        )

    def forward(self, windows: list[list[int]]) -> ForwardBatch:
        """Pad ``windows`` on the right and run the transformer once (no gradients)."""
        input_ids, attention_mask = pad_right(windows, self._pad_id, self.device)
        assert self.runtime is not None, "the flagembedding backend has no forward pass"
        with self._forward_lock:
            hidden = self.runtime(input_ids, attention_mask)
        return ForwardBatch(hidden=hidden, attention_mask=attention_mask, input_ids=input_ids)

    def combine_windows(self, rows: np.ndarray, tokenized: Tokenized) -> np.ndarray:
        """One vector per text from per-window vectors (long_text="chunk").

        A text's vector is the token-count-weighted mean of its windows' pooled vectors (for
        mean pooling: close to the mean over the whole text), then normalized if configured.
        """
        weights = np.asarray([len(ids) for ids in tokenized.ids], dtype=np.float64)
        owners = np.asarray(tokenized.owners)
        totals = np.zeros((tokenized.count, rows.shape[1]), dtype=np.float64)
        np.add.at(totals, owners, rows * weights[:, None])
        combined = totals / np.bincount(owners, weights=weights)[:, None]
        if self.settings.normalize:
            combined /= np.maximum(np.linalg.norm(combined, axis=1, keepdims=True), 1e-12)
        return combined.astype(np.float32)


_encoders: SharedModels[LocalEncoder] = SharedModels()


def get_encoder(config: EncoderConfig | None = None, /, **options: Any) -> LocalEncoder:
    """The shared encoder for these settings: loaded on first use, then the same instance.

    Takes an :class:`EncoderConfig` (or an adapter, which is one), keyword options (the
    same names), or both (options override the config). Thread-safe: concurrent first calls
    load the model once.

    Example:
        >>> from localembed import get_encoder
        >>> get_encoder(pooling="mean") is get_encoder(pooling="mean")
        True

    """
    return _encoders.for_config(EncoderConfig, config, options, LocalEncoder)


def clear_encoder_cache() -> None:
    """Forget every shared encoder (their memory is freed once nothing else holds them)."""
    _encoders.clear()
