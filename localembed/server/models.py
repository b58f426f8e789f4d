"""What the server serves: one :class:`ModelSpec` per model, from flags or a TOML file.

A config file has one table per served model under ``[models]`` (its key is the id
clients send) and an optional ``[server]`` table of :class:`ServerSettings` fields::

    [server]
    max_loaded_models = 2
    idle_unload_s = 600

    [models.minilm]                  # kind = "embedding" is the default
    model = "sentence-transformers/all-MiniLM-L6-v2"

    [models."bge-m3"]
    model = "BAAI/bge-m3"
    max_length = 1024
    api_keys = ["team-a-key"]        # only these keys (or --api-key) may use it

    [models.rerank]
    kind = "reranker"
    model = "BAAI/bge-reranker-v2-m3"

Every other key of a model's table is an :class:`~localembed.EncoderConfig` field (a
reranker's: :class:`~localembed.RerankerConfig`), checked when the file is read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_origin

from pydantic import ValidationError

from localembed.config import EncoderConfig, ModelOptions, RerankerConfig
from localembed.errors import InputError

Kind = Literal["embedding", "reranker"]
KINDS: tuple[Kind, ...] = ("embedding", "reranker")
DEFAULT_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"

_SPEC_KEYS = ("kind", "api_keys", "max_queue", "preload", "default", "aliases", "ray")
"""Keys of a model's table that are the server's, not the model's."""


@dataclass(frozen=True)
class ModelSpec:
    """One served model: its id, kind, settings and admission limits."""

    id: str
    """The id clients send (``model`` in OpenAI/Cohere bodies, ``/models/ID/...`` paths)."""
    kind: Kind
    """"embedding" (an EncoderConfig) or "reranker" (a RerankerConfig)."""
    config: EncoderConfig | RerankerConfig
    """The model's settings."""
    api_keys: frozenset[str] | None = field(default=None, repr=False)
    """Keys that may use this model (besides the server's --api-key); None: the server's."""
    max_queue: int | None = None
    """Requests admitted at once for this model; None: the server's --max-queue."""
    preload: bool | None = None
    """Load at start; None: the server's setting."""
    default: bool = False
    """The model of its kind that requests naming no model (and the TEI routes) use."""
    aliases: frozenset[str] = frozenset()
    """Other names clients may send for this model."""
    origin: str = field(default="", compare=False)
    """Where it was declared, for messages (``--config FILE: [models.ID]``, ``--model M``)."""
    ray: dict[str, Any] = field(default_factory=dict, compare=False)
    """Its Ray Serve deployment's options (``[models.ID.ray]``: ``num_replicas``,
    ``num_cpus``, ...; see :data:`RAY_OPTIONS`); ``localembed serve`` ignores them."""


RAY_OPTIONS: dict[str, tuple[bool, float]] = {
    "num_replicas": (True, 1),
    "min_replicas": (True, 0),
    "max_replicas": (True, 1),
    "target_ongoing_requests": (False, 0),
    "max_ongoing_requests": (True, 1),
    "num_cpus": (False, 0),
    "num_gpus": (False, 0),
}
"""A model's ``[models.ID.ray]`` keys: whether each is an integer, and its smallest value
(each means what :func:`localembed.ray.serve_application`'s argument of that name means;
``num_cpus`` / ``num_gpus``: per replica)."""


def public_name(model: str | None) -> str:
    """The name a client may see for ``model``: a hub id as given, a local directory's name.

    A server never discloses its file system, so a path becomes its last part.

    Example:
        >>> public_name("/srv/models/bge-small"), public_name("BAAI/bge-m3"), public_name(None)
        ('bge-small', 'BAAI/bge-m3', 'sentence-transformers/all-MiniLM-L6-v2')

    """
    if model is None:
        return DEFAULT_MODEL_ID
    path = Path(model)
    if path.is_absolute() or model.startswith(("./", "../", "~")) or path.is_dir():
        return path.expanduser().resolve().name or model
    return model


def embedding_spec(config: EncoderConfig, model_id: str | None = None) -> ModelSpec:
    """The spec of one ``--model``; the name as given (a path) is accepted as an alias."""
    model_id = model_id or public_name(config.model)
    aliases = frozenset({config.model} - {None, model_id})
    origin = f"--model {config.model}" if config.model else "the default model"
    return ModelSpec(
        id=model_id,
        kind="embedding",
        config=config,
        aliases=aliases,  # type: ignore[arg-type]
        origin=origin,
    )


def reranker_spec(name: str, like: EncoderConfig | None = None) -> ModelSpec:
    """The spec of one ``--reranker NAME``: the served model's device, dtype and batching."""
    options: dict[str, Any] = {}
    if like is not None:
        shared = (like.model_fields_set & set(ModelOptions.model_fields)) - {"max_length"}
        shared &= set(RerankerConfig.model_fields)
        options = {key: getattr(like, key) for key in shared}
    try:
        config = RerankerConfig(**{**options, "model": name})
    except ValidationError as error:
        message = f"--reranker {name!r}: {_first_error(error)}"
        raise InputError(message) from error
    model_id = public_name(name)
    aliases = frozenset({name} - {model_id})
    return ModelSpec(id=model_id, kind="reranker", config=config, aliases=aliases)


def read_config_file(path: str | Path) -> tuple[dict[str, Any], list[ModelSpec]]:
    """The ``[server]`` options and the model specs of a TOML config file.

    Raises:
        InputError: the file cannot be read or parsed, or a table has an unknown or
            invalid key (the message names the file, the model and the key).
    """
    import tomllib

    source = Path(path)
    try:
        data = tomllib.loads(source.read_text(encoding="utf-8"))
    except OSError as error:
        message = f"--config {source}: cannot read it ({error.strerror or error})"
        raise InputError(message) from error
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        message = f"--config {source}: not valid TOML ({error})"
        raise InputError(message) from error
    unknown = set(data) - {"server", "models"}
    if unknown:
        message = (
            f"--config {source}: unknown table(s) {', '.join(sorted(unknown))}; "
            "the file has [server] and [models.ID] tables"
        )
        raise InputError(message)
    server = data.get("server", {})
    models = data.get("models", {})
    if not isinstance(server, dict) or not isinstance(models, dict):
        message = f"--config {source}: [server] and [models] must be tables"
        raise InputError(message)
    if "models" in data and not models:
        message = f"--config {source}: [models] has no [models.ID] table; add one per model"
        raise InputError(message)
    _check_server_table(source, server)
    specs = [_spec_of(source, model_id, table) for model_id, table in models.items()]
    return server, specs


def _check_server_table(source: Path, server: dict[str, Any]) -> None:
    """Refuse an unknown ``[server]`` key (suggesting the closest) or a value of a wrong type.

    TOML has types, so they are taken strictly: ``preload = "no"`` is an error, not False.
    """
    from localembed.config import did_you_mean
    from localembed.server.settings import ServerSettings

    where = f"--config {source}: [server]"
    valid = sorted(ServerSettings.model_fields)
    for key in server:
        if key not in ServerSettings.model_fields:
            hint = did_you_mean(key, valid)
            message = f"{where}: unknown setting {key!r}{hint}; the settings: {', '.join(valid)}"
            raise InputError(message)
    try:
        ServerSettings.model_validate(server, strict=True)
    except ValidationError as error:
        message = f"{where}: {_first_error(error)}"
        raise InputError(message) from error


def _spec_of(source: Path, model_id: str, table: Any) -> ModelSpec:
    where = f"--config {source}: [models.{model_id}]"
    if not model_id.strip() or model_id != model_id.strip():
        message = f"{where}: a model id must be a non-empty name without surrounding spaces"
        raise InputError(message)
    if not isinstance(table, dict):
        message = f"{where} must be a table of settings"
        raise InputError(message)
    kind = table.get("kind", "embedding")
    if kind not in KINDS:
        message = f"{where}: kind must be 'embedding' or 'reranker', got {kind!r}"
        raise InputError(message)
    settings = {key: value for key, value in table.items() if key not in _SPEC_KEYS}
    settings.setdefault("model", model_id if kind == "reranker" else None)
    if settings["model"] is None:
        settings.pop("model")
    kind_config: type[EncoderConfig] | type[RerankerConfig] = (
        EncoderConfig if kind == "embedding" else RerankerConfig
    )
    # TOML has types: taken strictly ("mean" for a number is an error, not coerced); TOML
    # has no tuples, so an array is taken for a tuple field (m3_weights).
    for key, value in settings.items():
        field = kind_config.model_fields.get(key)
        if field is not None and isinstance(value, list) and get_origin(field.annotation) is tuple:
            settings[key] = tuple(value)
    try:
        config = kind_config.model_validate(settings, strict=True)
    except ValidationError as error:
        message = f"{where}: {_first_error(error)}"
        raise InputError(message) from error
    keys = table.get("api_keys")
    if keys is not None and (
        not isinstance(keys, list) or not keys or not all(isinstance(k, str) and k for k in keys)
    ):
        message = f"{where}: api_keys must be a non-empty list of non-empty strings"
        raise InputError(message)
    max_queue = table.get("max_queue")
    if max_queue is not None and (
        not isinstance(max_queue, int) or isinstance(max_queue, bool) or max_queue <= 0
    ):
        message = f"{where}: max_queue must be a positive integer, got {max_queue!r}"
        raise InputError(message)
    for flag in ("preload", "default"):
        if flag in table and not isinstance(table[flag], bool):
            message = f"{where}: {flag} must be true or false, got {table[flag]!r}"
            raise InputError(message)
    ray = table.get("ray", {})
    if not isinstance(ray, dict):
        message = f"{where}: ray must be a table of deployment options ({', '.join(RAY_OPTIONS)})"
        raise InputError(message)
    for key, value in ray.items():
        if key not in RAY_OPTIONS:
            message = f"{where}.ray: unknown option {key!r}; the options: {', '.join(RAY_OPTIONS)}"
            raise InputError(message)
        integer, least = RAY_OPTIONS[key]
        kinds: tuple[type, ...] = (int,) if integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, kinds) or value < least:  # type: ignore[operator]
            what = "an integer" if integer else "a number"
            message = f"{where}.ray: {key} must be {what} >= {least:g}, got {value!r}"
            raise InputError(message)
    aliases = table.get("aliases", [])
    if not isinstance(aliases, list) or not all(isinstance(a, str) and a for a in aliases):
        message = f"{where}: aliases must be a list of names"
        raise InputError(message)
    return ModelSpec(
        id=model_id,
        kind=kind,
        config=config,
        api_keys=frozenset(keys) if keys is not None else None,
        max_queue=max_queue,
        preload=table.get("preload"),
        default=bool(table.get("default", False)),
        aliases=frozenset(aliases),
        origin=where,
        ray=dict(ray),
    )


def check_specs(specs: list[ModelSpec]) -> list[ModelSpec]:
    """``specs`` with one default per kind marked; ids and aliases unique.

    Raises:
        InputError: two models share an id or alias, or two of a kind are marked default.
    """
    seen: dict[str, str] = {}
    for spec in specs:
        for name in (spec.id, *sorted(spec.aliases)):
            if name in seen:
                message = (
                    f"two served models are named {name!r} ({seen[name]} and {spec.id}); "
                    "give one another id (--config table name, or --model-name)"
                )
                raise InputError(message)
            seen[name] = spec.id
    for index, spec in enumerate(specs):
        for earlier in specs[:index]:
            if earlier.kind == spec.kind and earlier.config == spec.config:
                message = (
                    f"models {earlier.id!r} and {spec.id!r} are the same model with the same "
                    "settings; serve it once and give it other names with aliases"
                )
                raise InputError(message)
    marked: list[ModelSpec] = []
    for kind in KINDS:
        of_kind = [spec for spec in specs if spec.kind == kind]
        defaults = [spec for spec in of_kind if spec.default]
        if len(defaults) > 1:
            named = ", ".join(spec.id for spec in defaults)
            message = f"more than one default {kind} model: {named}; mark one"
            raise InputError(message)
        if of_kind and not defaults:
            defaults = [of_kind[0]]
        marked.extend(defaults)
    from dataclasses import replace

    return [replace(spec, default=spec in marked) for spec in specs]


def check_contexts(specs: list[ModelSpec]) -> list[ModelSpec]:
    """``specs`` with each CDE ``context`` file read and checked against its model, at start.

    A context names its model by fingerprint; it is checked here, from the model's files
    (config and tokenizer, no weights), so that a wrong or missing file stops the server
    before it serves (not at a lazy model's first request). The checked context replaces
    the path in the model's settings: the file is read once.

    Raises:
        InputError: a context file is missing or not a context file, the model is not a
            CDE model, or the context was built by another model (the message names the
            model id and where it was declared: ``--config FILE: [models.ID]``).
    """
    from dataclasses import replace

    from localembed.errors import LocalEmbedError

    checked: list[ModelSpec] = []
    for spec in specs:
        config = spec.config
        if isinstance(config, EncoderConfig) and isinstance(config.context, str):
            where = spec.origin or f"model {spec.id!r}"
            try:
                context = _checked_context(config)
            except (LocalEmbedError, OSError) as error:
                message = f"{where} (model {spec.id!r}): context {config.context}: {error}"
                raise InputError(message) from error
            options = {**config.explicit_options(), "context": context}
            spec = replace(spec, config=EncoderConfig(**options))
        checked.append(spec)
    return checked


def _checked_context(config: EncoderConfig) -> Any:
    """The context file of ``config``, read and checked against its model's fingerprint."""
    from localembed.backends.base import read_model_files
    from localembed.contextual import ContextError, check_context, is_contextual, load_context
    from localembed.corpus_context import model_fingerprint

    context = load_context(str(config.context))
    files = read_model_files(config)
    if not is_contextual(files.model_config):
        message = (
            f"context is for contextual document embedding (CDE) models; {files.source.name} "
            "is not one (its config has no transductive_corpus_size)"
        )
        raise ContextError(message)
    fingerprint = model_fingerprint(files.metadata.transformer_path, files.tokenizer)
    check_context(context, fingerprint, files.source.name)
    return context


def _first_error(error: ValidationError) -> str:
    first = error.errors()[0]
    message = str(first.get("msg", "invalid")).removeprefix("Value error, ")
    where = ".".join(str(part) for part in first.get("loc", ()))
    return f"{where}: {message}" if where else message
