"""The drop-in path from the Hugging Face adapters: their keyword arguments, mapped explicitly.

langchain-huggingface's ``HuggingFaceEmbeddings`` passes ``model_kwargs`` to the
``SentenceTransformer`` constructor and ``encode_kwargs`` / ``query_encode_kwargs`` to its
``encode`` (documents / queries; queries use ``encode_kwargs`` when ``query_encode_kwargs`` is
empty). llama-index's ``HuggingFaceEmbedding`` takes ``text_instruction`` and
``show_progress_bar`` itself and passes ``model_kwargs`` on as sentence-transformers'
``model_kwargs`` (the transformers ``from_pretrained`` arguments).

This module is the ONE table of what each of those keys means in localembed
(:data:`CONSTRUCTOR_KEYS`, :data:`ENCODE_KEYS`, :data:`TRANSFORMERS_KEYS`); both adapters
call :func:`from_sentence_transformers` and :func:`from_transformers_kwargs`. A key without a
localembed meaning is an error naming it and the supported keys; two settings that
localembed holds once (``normalize``, ``truncate_dim``) must agree between documents and
queries.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from localembed.errors import InputError, InputTypeError

__all__ = [
    "CONSTRUCTOR_KEYS",
    "HUGGINGFACE_ANCHORS",
    "ENCODE_KEYS",
    "TRANSFORMERS_KEYS",
    "KeyRule",
    "LLAMAINDEX_KEYS",
    "from_sentence_transformers",
    "from_transformers_kwargs",
    "langchain_huggingface_options",
    "llamaindex_huggingface_options",
    "migration_rows",
]


@dataclass(frozen=True)
class KeyRule:
    """What one Hugging Face keyword means in localembed."""

    option: str
    """The localembed option it sets (an EncoderConfig field, or ``show_progress``)."""
    convert: Callable[[Any], Any] | None = None
    """Turns the Hugging Face value into the localembed value (None: the same value)."""
    note: str = ""
    """How it differs, for the README's migration table."""

    def value(self, key: str, value: Any) -> Any:
        """The localembed value of ``key=value``."""
        return value if self.convert is None else self.convert(value)


def _device(value: Any) -> str:
    return "auto" if value is None else str(value)


def _dtype(value: Any) -> str:
    name = str(value).removeprefix("torch.")
    aliases = {"float": "float32", "half": "float16", "bfloat16": "bfloat16", "auto": "auto"}
    name = aliases.get(name, name)
    if name not in ("auto", "float32", "float16", "bfloat16"):
        msg = (
            f"torch_dtype {value!r} has no localembed dtype; "
            f"valid: auto, float32, float16, bfloat16"
        )
        raise InputError(msg)
    return name


def _backend(value: Any) -> str:
    if value not in ("torch", "onnx"):
        msg = f"backend {value!r} has no localembed backend; valid: 'torch', 'onnx'"
        raise InputError(msg)
    return str(value)


def _float_lists(value: Any) -> str:
    if value != "float32":
        msg = (
            f"precision {value!r}: the LangChain and LlamaIndex interfaces return float lists, "
            f"so the adapters keep float32; quantize with "
            f"get_encoder(...).encode(texts, precision={value!r}) (or the CLI / server) instead"
        )
        raise InputError(msg)
    return "float32"


def _batch_size(value: Any) -> int:
    return int(value)


TRANSFORMERS_KEYS: dict[str, KeyRule] = {
    "torch_dtype": KeyRule("dtype", _dtype, "torch.float16 -> 'float16'"),
    "dtype": KeyRule("dtype", _dtype, "torch.float16 -> 'float16'"),
}
"""sentence-transformers' ``model_kwargs`` (transformers ``from_pretrained`` arguments)."""

CONSTRUCTOR_KEYS: dict[str, KeyRule] = {
    "device": KeyRule("device", _device, "None -> 'auto'"),
    "trust_remote_code": KeyRule("trust_remote_code"),
    "truncate_dim": KeyRule("truncate_dim"),
    "backend": KeyRule("backend", _backend, "'torch' or 'onnx'"),
    "model_kwargs": KeyRule("dtype", None, "only torch_dtype / dtype"),
}
"""``HuggingFaceEmbeddings(model_kwargs=...)``: the ``SentenceTransformer`` constructor's."""

ENCODE_KEYS: dict[str, KeyRule] = {
    "normalize_embeddings": KeyRule(
        "normalize", None, "False keeps the model's own Normalize module, as there"
    ),
    "batch_size": KeyRule("batch_size", _batch_size),
    "prompt": KeyRule(
        "instruction", None, "document_instruction / query_instruction (prefix or '{text}')"
    ),
    "show_progress_bar": KeyRule("show_progress"),
    "truncate_dim": KeyRule("truncate_dim"),
    "precision": KeyRule("precision", _float_lists, "only 'float32' (adapters return floats)"),
}
"""``encode_kwargs`` / ``query_encode_kwargs``: ``SentenceTransformer.encode``'s arguments."""


def _translate(
    kwargs: Mapping[str, Any], table: Mapping[str, KeyRule], where: str
) -> dict[str, Any]:
    if not isinstance(kwargs, Mapping):
        msg = f"{where} must be a dict, got {type(kwargs).__name__}"
        raise InputTypeError(msg)
    options: dict[str, Any] = {}
    for key, value in kwargs.items():
        rule = table.get(key)
        if rule is None:
            msg = (
                f"{where} key {key!r} has no localembed meaning; supported keys: "
                f"{', '.join(sorted(table))} (see the migration table in docs/migration.md)"
            )
            raise InputError(msg)
        options[rule.option] = rule.value(key, value)
    return options


def from_transformers_kwargs(kwargs: Mapping[str, Any], where: str = "model_kwargs") -> str:
    """The localembed ``dtype`` that sentence-transformers' ``model_kwargs`` ask for.

    Example:
        >>> from_transformers_kwargs({"torch_dtype": "float16"})
        'float16'
        >>> from_transformers_kwargs({"attn_implementation": "sdpa"})
        Traceback (most recent call last):
        ...
        localembed.errors.InputError: model_kwargs key 'attn_implementation' has no localembed ...

    """
    options = _translate(kwargs, TRANSFORMERS_KEYS, where)
    return str(options.get("dtype", "auto"))


def _agree(name: str, documents: Any, queries: Any) -> Any:
    if documents != queries:
        msg = (
            f"documents and queries ask for different {name} ({documents!r} vs {queries!r}) "
            f"in encode_kwargs / query_encode_kwargs; localembed applies one {name} to both"
        )
        raise InputError(msg)
    return documents


def _model_normalizes(model: str | None) -> bool:
    """Whether the model's sentence-transformers modules end in Normalize."""
    from localembed.loading import locate_model
    from localembed.st_metadata import read_sentence_transformers_metadata

    metadata = read_sentence_transformers_metadata(locate_model(model).path)
    return bool(metadata.normalize)


def from_sentence_transformers(
    model: str | None,
    model_kwargs: Mapping[str, Any] | None = None,
    encode_kwargs: Mapping[str, Any] | None = None,
    query_encode_kwargs: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Localembed options equal to ``HuggingFaceEmbeddings(model_kwargs=..., encode_kwargs=...)``.

    Returns the EncoderConfig options (and ``show_progress``) those arguments mean; queries
    use ``encode_kwargs`` when ``query_encode_kwargs`` is empty, as langchain-huggingface does.

    Raises:
        ValueError: a key without a localembed meaning (named, with the supported keys), a
            value localembed cannot give, or documents and queries asking for different
            ``normalize`` / ``truncate_dim`` (localembed holds each once).

    Example:
        >>> options = from_sentence_transformers(
        ...     None,
        ...     {"device": "cpu"},
        ...     {"normalize_embeddings": True, "batch_size": 16, "prompt": "passage: "},
        ...     {"normalize_embeddings": True, "prompt": "query: "},
        ... )
        >>> options["device"], options["normalize"], options["batch_size"]
        ('cpu', True, 16)
        >>> options["document_instruction"], options["query_instruction"]
        ('passage: ', 'query: ')

    """
    options: dict[str, Any] = {}
    constructor = _translate(model_kwargs or {}, CONSTRUCTOR_KEYS, "model_kwargs")
    if "dtype" in constructor:
        constructor["dtype"] = from_transformers_kwargs(
            constructor["dtype"], "model_kwargs['model_kwargs']"
        )
    options.update(constructor)
    documents = _translate(encode_kwargs or {}, ENCODE_KEYS, "encode_kwargs")
    queries = (
        _translate(query_encode_kwargs, ENCODE_KEYS, "query_encode_kwargs")
        if query_encode_kwargs
        else documents
    )
    if "normalize" in documents or "normalize" in queries:
        # sentence-transformers' False (its default) means "no extra normalization": the
        # model's own Normalize module (all-MiniLM-L6-v2 has one) still applies.
        model_normalizes: list[bool] = []

        def normalized(kwargs: dict[str, Any]) -> bool:
            if kwargs.get("normalize"):
                return True
            if not model_normalizes:
                model_normalizes.append(_model_normalizes(model))
            return model_normalizes[0]

        _agree("normalize", normalized(documents), normalized(queries))
        options["normalize"] = normalized(documents)
    truncate_dim = options.get("truncate_dim")
    if "truncate_dim" in documents or "truncate_dim" in queries:
        options["truncate_dim"] = _agree(
            "truncate_dim",
            documents.get("truncate_dim", truncate_dim),
            queries.get("truncate_dim", truncate_dim),
        )
    for name in ("batch_size", "show_progress"):
        if name in documents or name in queries:
            options[name] = documents.get(name, queries.get(name))
    if "instruction" in documents:
        options["document_instruction"] = documents["instruction"]
    if "instruction" in queries:
        options["query_instruction"] = queries["instruction"]
    return options


def _merge(data: dict[str, Any], options: dict[str, Any], where: str) -> dict[str, Any]:
    merged = dict(data)
    for name, value in options.items():
        if name in merged and merged[name] != value:
            msg = (
                f"{name} given twice: {name}={merged[name]!r} and {value!r} from {where}; "
                f"pass it once"
            )
            raise InputError(msg)
        merged[name] = value
    return merged


def _one_process(data: dict[str, Any], name: str, off: Any) -> dict[str, Any]:
    """Drop ``name`` when it keeps one process (``off``); refuse anything else, saying why."""
    if name not in data:
        return data
    if data[name] != off:
        msg = (
            f"{name}={data[name]!r} is not supported: sentence-transformers starts a pool of "
            f"processes for it; localembed runs one model per process and merges concurrent "
            f"calls into shared batches (micro-batching) instead. Drop {name} (or pass "
            f"{name}={off!r}); to use several GPUs, build one adapter per device (device='cuda:N')"
        )
        raise ValueError(msg)
    return {key: value for key, value in data.items() if key != name}


def _cache_folder(data: dict[str, Any]) -> dict[str, Any]:
    """sentence-transformers' ``cache_folder``: where hub models are cached and found.

    None is the default cache (dropped); a folder resolves a hub id there to its local
    snapshot, which becomes ``model`` (a local directory or the default model: unchanged).
    """
    if "cache_folder" not in data:
        return data
    folder = data["cache_folder"]
    rest = {key: value for key, value in data.items() if key != "cache_folder"}
    model = rest.get("model", rest.get("model_name"))
    if folder is None or model is None or Path(str(model)).expanduser().is_dir():
        return rest
    from localembed.loading import hub_snapshot

    snapshot = str(hub_snapshot(str(model), str(folder)))
    rest.pop("model_name", None)
    return {**rest, "model": snapshot}


def langchain_huggingface_options(data: dict[str, Any]) -> dict[str, Any]:
    """``HuggingFaceEmbeddings``-style constructor arguments as localembed options.

    ``model_kwargs``, ``encode_kwargs`` and ``query_encode_kwargs`` are translated
    (:func:`from_sentence_transformers`) and merged into the other arguments; an option
    given both ways with different values is an error. ``multi_process=False`` is dropped
    (``True`` is refused, with the reason) and ``cache_folder`` finds a hub model in that
    cache.
    """
    data = _cache_folder(_one_process(data, "multi_process", False))
    names = ("model_kwargs", "encode_kwargs", "query_encode_kwargs")
    if not any(name in data for name in names):
        return data
    rest = {key: value for key, value in data.items() if key not in names}
    model = rest.get("model", rest.get("model_name"))
    options = from_sentence_transformers(
        model, data.get("model_kwargs"), data.get("encode_kwargs"), data.get("query_encode_kwargs")
    )
    return _merge(rest, options, "model_kwargs / encode_kwargs / query_encode_kwargs")


LLAMAINDEX_KEYS: dict[str, KeyRule] = {
    "text_instruction": KeyRule("document_instruction"),
    "show_progress_bar": KeyRule("show_progress"),
    "model_kwargs": KeyRule("dtype", from_transformers_kwargs, "only torch_dtype / dtype"),
}
"""llama-index ``HuggingFaceEmbedding``'s own arguments whose localembed name differs."""


def llamaindex_huggingface_options(data: dict[str, Any]) -> dict[str, Any]:
    """``HuggingFaceEmbedding``-style constructor arguments as localembed options.

    ``text_instruction``, ``show_progress_bar`` and ``model_kwargs`` (sentence-transformers'
    transformers arguments) are renamed (:data:`LLAMAINDEX_KEYS`); an option given both ways
    with different values is an error. ``device=None`` is ``"auto"``; ``parallel_process=False``
    and ``target_devices=None`` are dropped (other values refused, with the reason);
    ``cache_folder`` finds a hub model in that cache.
    """
    data = _one_process(_one_process(data, "parallel_process", False), "target_devices", None)
    data = _cache_folder(data)
    if "device" in data and data["device"] is None:  # HuggingFaceEmbedding: None = pick one
        data = {**data, "device": "auto"}
    given = {key: data[key] for key in LLAMAINDEX_KEYS if key in data}
    if not given:
        return data
    rest = {key: value for key, value in data.items() if key not in LLAMAINDEX_KEYS}
    options = {
        LLAMAINDEX_KEYS[key].option: LLAMAINDEX_KEYS[key].value(key, value)
        for key, value in given.items()
    }
    return _merge(rest, options, ", ".join(given))


HUGGINGFACE_ANCHORS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "langchain": langchain_huggingface_options,
    "llamaindex": llamaindex_huggingface_options,
}
"""Adapter kind -> the translation of its Hugging Face anchor's arguments."""


def migration_rows() -> list[tuple[str, str, str]]:
    """(Hugging Face key, localembed option, note) for every mapped key, for the README.

    Example:
        >>> ("encode_kwargs['batch_size']", "batch_size", "") in migration_rows()
        True

    """
    rows: list[tuple[str, str, str]] = []
    for where, table in (
        ("model_kwargs", CONSTRUCTOR_KEYS),
        ("encode_kwargs", ENCODE_KEYS),
        ("model_kwargs['model_kwargs']", TRANSFORMERS_KEYS),
        ("HuggingFaceEmbedding", LLAMAINDEX_KEYS),
    ):
        rows.extend((f"{where}[{key!r}]", rule.option, rule.note) for key, rule in table.items())
    return rows
