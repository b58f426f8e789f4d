"""Ray integration: Ray Data ingestion on a pool of actors, and the server on Ray Serve.

Each actor loads the shared encoder once (one model per actor, on its own GPU when the
cluster has GPUs) and embeds batches of rows with ``encode_documents`` (or
``encode_queries``). Needs the ``ray`` extra: ``pip install "localembed[ray]"``.
Importing this module imports no Ray.
"""

from __future__ import annotations

import inspect
import reprlib
from typing import TYPE_CHECKING, Any

from localembed.config import EncoderConfig
from localembed.errors import InputError, InputTypeError
from localembed.extras import require
from localembed.texts import KINDS, Kind

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa
    from ray.data import Dataset

    from localembed.encoder import LocalEncoder
    from localembed.server.models import ModelSpec
    from localembed.server.remote import Answer, Forwarded
    from localembed.server.settings import ServerSettings


DEFAULT_ROWS_PER_BATCH = 512
"""Rows handed to an actor at a time. The encoder sorts each batch by length and splits it
into token-budget forward passes itself, so this only sets the pipeline's granularity."""


def embed_dataset(
    ds: Dataset,
    column: str = "text",
    output_column: str = "embedding",
    *,
    kind: Kind = "document",
    concurrency: int | tuple[int, int] | None = None,
    rows_per_batch: int = DEFAULT_ROWS_PER_BATCH,
    num_gpus_per_actor: float | None = None,
    num_cpus_per_actor: float | None = None,
    **config: Any,
) -> Dataset:
    """Add a column of float32 embeddings of ``column`` to a Ray Dataset (lazily).

    The settings are checked here, in the driver, before any Ray work: an unknown option is
    an error with a did-you-mean. Then ``ds.map_batches`` runs the encoder on a pool of
    actors, one model per actor. Every other column is kept as it is, and each row's vector
    stays with its row (row order follows Ray's ``execution_options.preserve_order``).

    Args:
        ds: the dataset; ``column`` must hold str (no None).
        column: the text column.
        output_column: the new column: one float32 vector per row (a Ray tensor column:
            numpy batches give a (rows, dimension) array; Parquet stores lists of float).
        kind: "document" applies the document instruction, "query" the query instruction.
        concurrency: actors in the pool: n (fixed), (min, max) (autoscaling), or None:
            from 1 up to what the cluster's resources allow.
        rows_per_batch: rows per ``map_batches`` batch (``batch_size`` is the encoder's
            texts per forward pass, as everywhere in localembed).
        num_gpus_per_actor: GPUs reserved per actor; None: 1 when the cluster has GPUs and
            ``device`` is "auto" or "cuda", else 0. Fractions pack actors onto one GPU.
        num_cpus_per_actor: CPUs reserved per actor (Ray sets the actor's torch threads to
            it); None: Ray's default (1).
        **config: the encoder's settings (:class:`~localembed.EncoderConfig`). A CDE model's
            ``context`` (a CorpusContext built in the driver, or a file path read here) is
            sent to the actors with their settings; they never rebuild it.

    Returns:
        A lazy Dataset: ``ds``'s columns plus ``output_column``.

    Raises:
        ValueError: an unknown or invalid setting, a missing ``column`` (the message names
            the columns present), or ``output_column`` already present.
        ImportError: Ray Data is not installed.

    Examples:
        >>> import ray  # doctest: +SKIP
        >>> from localembed.ray import embed_dataset
        >>> ds = ray.data.from_items([{"id": 1, "text": "a cat"}])  # doctest: +SKIP
        >>> embed_dataset(ds).take_all()[0]["embedding"].shape  # doctest: +SKIP
        (384,)

    """
    settings = with_context_loaded(EncoderConfig(**config))
    if kind not in KINDS:
        msg = f"kind must be one of {', '.join(KINDS)}, got {kind!r}"
        raise InputError(msg)
    if rows_per_batch <= 0:
        msg = f"rows_per_batch must be a positive int, got {rows_per_batch!r}"
        raise InputError(msg)
    if column == output_column:
        msg = f"output_column must differ from column (both {column!r})"
        raise InputError(msg)
    if settings.device.startswith("cuda:"):
        msg = (
            f"device={settings.device!r}: Ray gives each actor its own GPU(s) as cuda:0; "
            f"use device='cuda' or 'auto' (and num_gpus_per_actor)"
        )
        raise InputError(msg)
    ray = require("ray", "embed_dataset")
    require("ray.data", "embed_dataset")

    # Without execution: a schema Ray already knows (in-memory data, Parquet metadata).
    schema = ds.schema(fetch_if_missing=False)
    if schema is not None:
        check_columns(list(schema.names), column, output_column)
    num_gpus, device = _placement(ray, settings.device, num_gpus_per_actor)
    if device != settings.device:
        settings = EncoderConfig(**{**settings.explicit_options(), "device": device})
    options: dict[str, Any] = {}
    if "udf_modifying_row_count" in inspect.signature(ds.map_batches).parameters:
        # One output row per input row: lets Ray push a later .limit() before the model.
        options["udf_modifying_row_count"] = False
    return ds.map_batches(
        EmbedBatch,
        fn_constructor_kwargs={
            "config": settings,
            "column": column,
            "output_column": output_column,
            "kind": kind,
        },
        batch_size=rows_per_batch,
        batch_format="pyarrow",  # other columns pass through untouched (no numpy round trip)
        compute=_actor_pool(ray.data.ActorPoolStrategy, concurrency),
        num_gpus=num_gpus or None,
        num_cpus=num_cpus_per_actor,
        **options,
    )


def with_context_loaded(settings: EncoderConfig) -> EncoderConfig:
    """``settings`` with a CDE context file read here, in the driver, into the context itself.

    The context then travels to the actors (or replicas) with their settings: none reads the
    file (it may not see it) or recomputes the context.

    Raises:
        ContextError: the file is missing or is not a context file.
    """
    if not isinstance(settings.context, str):
        return settings
    from localembed.contextual import load_context

    loaded = load_context(settings.context)
    return EncoderConfig(**{**settings.explicit_options(), "context": loaded})


def _placement(ray: Any, device: str, num_gpus_per_actor: float | None) -> tuple[float, str]:
    """GPUs per actor and the device the actors' encoders use."""
    if num_gpus_per_actor is not None and num_gpus_per_actor < 0:
        msg = f"num_gpus_per_actor must be >= 0, got {num_gpus_per_actor!r}"
        raise InputError(msg)
    if num_gpus_per_actor is not None and device != "auto":
        return num_gpus_per_actor, device
    if device not in {"auto", "cuda"}:
        return 0.0, device
    if not ray.is_initialized():
        ray.init()  # what Ray Data would do on first execution: connect or start locally
    cluster_gpus = float(ray.cluster_resources().get("GPU", 0))
    if num_gpus_per_actor is None:
        if device == "cuda" and not cluster_gpus:
            msg = (
                "device='cuda' but the Ray cluster has no GPU; use device='auto' or 'cpu', or "
                "set num_gpus_per_actor for GPU nodes an autoscaler has yet to start"
            )
            raise InputError(msg)
        return (1.0 if cluster_gpus else 0.0), device
    # device="auto" with actors that hold no GPU: keep them off GPUs Ray gave to others.
    return num_gpus_per_actor, ("cpu" if cluster_gpus and not num_gpus_per_actor else device)


def _actor_pool(strategy: Any, concurrency: int | tuple[int, int] | None) -> Any:
    """A ray.data.ActorPoolStrategy for ``concurrency``."""
    if concurrency is None:
        return strategy(min_size=1, max_size=None)
    if isinstance(concurrency, int) and not isinstance(concurrency, bool) and concurrency > 0:
        return strategy(size=concurrency)
    if (
        isinstance(concurrency, tuple)
        and len(concurrency) == 2
        and all(isinstance(n, int) and n > 0 for n in concurrency)
        and concurrency[0] <= concurrency[1]
    ):
        return strategy(min_size=concurrency[0], max_size=concurrency[1])
    msg = f"concurrency must be a positive int, (min, max) or None, got {concurrency!r}"
    raise InputError(msg)


def check_columns(names: list[str], column: str, output_column: str) -> None:
    """Raise ValueError if ``column`` is missing or ``output_column`` already exists."""
    if column not in names:
        msg = f"column {column!r} not in the dataset; its columns: {', '.join(names) or '(none)'}"
        raise InputError(msg)
    if output_column in names:
        msg = f"the dataset already has a column {output_column!r}; pick another output_column"
        raise InputError(msg)


class EmbedBatch:
    """The actor's callable: one encoder per actor, one embedding per row."""

    def __init__(self, config: EncoderConfig, column: str, output_column: str, kind: Kind) -> None:
        from localembed.encoder import get_encoder

        self.encoder: LocalEncoder = get_encoder(config)
        self.column = column
        self.output_column = output_column
        self.kind = kind

    def __call__(self, batch: pa.Table) -> pa.Table:
        """Append the embeddings of ``batch[column]`` as ``output_column``."""
        from ray.data.extensions import ArrowTensorArray

        check_columns(batch.column_names, self.column, self.output_column)
        texts = batch.column(self.column).to_pylist()
        bad = next((i for i, text in enumerate(texts) if not isinstance(text, str)), None)
        if bad is not None:
            raise InputTypeError(self._describe_bad_row(batch, bad))
        vectors = self._encode(texts)
        return batch.append_column(self.output_column, ArrowTensorArray.from_numpy(vectors))

    def _encode(self, texts: list[Any]) -> np.ndarray:
        return self.encoder.encode_kind(self.kind, texts)

    def _describe_bad_row(self, batch: pa.Table, index: int) -> str:
        # The encoder's TypeError would name the row's place in this batch, meaningless to
        # the user: show the row itself (its other columns identify it).
        row = batch.slice(index, 1).to_pylist()[0]
        return (
            f"column {self.column!r} must hold str, got {type(row[self.column]).__name__} in row "
            f"{reprlib.repr(row)}; drop or fill such rows first, e.g. "
            f"ds.filter(lambda row: isinstance(row[{self.column!r}], str))"
        )


# -- Ray Serve: one deployment per model behind one ingress ----------------------------------


def serve_application(
    config: EncoderConfig | None = None,
    settings: ServerSettings | None = None,
    *,
    num_replicas: int = 1,
    min_replicas: int | None = None,
    max_replicas: int | None = None,
    target_ongoing_requests: float = 8,
    max_ongoing_requests: int = 64,
    num_cpus_per_replica: float | None = None,
    num_gpus_per_replica: float | None = None,
    name: str = "localembed",
    models: list[ModelSpec] | None = None,
    ingress_replicas: int = 1,
    num_cpus_per_ingress: float | None = None,
) -> Any:
    """A Ray Serve application of the ``localembed serve`` app: one deployment per model.

    The ingress deployment (named ``name``) answers the same routes as ``localembed serve``
    with the same code: it checks each request (key, body, the model it names) and
    forwards it, as received, to the deployment of that model, which runs the server's app
    for that one model (its own micro-batcher, admission limit, lazy load and idle unload)
    and whose answer goes back unchanged. ``/v1/models``, ``/health`` and ``/metrics`` are
    the ingress's (``/v1/models`` asks each model's deployment whether it is loaded).

    The replica options below are every model deployment's; a model's own
    ``[models.ID.ray]`` table (:attr:`~localembed.server.models.ModelSpec.ray`) overrides
    them for that model. A model to preload loads in its replica's constructor, so Ray
    routes to a replica only once it is ready. Settings and models are checked here, in the
    driver, and a CDE model's ``context`` file is read here.

    Args:
        config: one encoder's settings (default: the embedded model), with
            ``settings.reranker`` a reranker too; ignored with ``models``.
        settings: the server's limits, key and loading policy
            (:class:`~localembed.server.ServerSettings`); each model deployment's replicas
            apply it to their one model (so ``max_loaded_models`` has nothing to evict).
        num_replicas: a fixed number of replicas per model (ignored with min/max_replicas).
        min_replicas: with ``max_replicas``: autoscale between these bounds (0: scale an
            unused model to zero replicas).
        max_replicas: the autoscaling upper bound.
        target_ongoing_requests: autoscaling target of requests in progress per replica.
        max_ongoing_requests: requests Ray hands one replica at once (its micro-batcher
            merges them; keep it well above 1).
        num_cpus_per_replica: CPUs Ray reserves per model replica (None: Ray's default, 1).
        num_gpus_per_replica: GPUs per model replica (None: 0).
        name: the ingress deployment's name; a model's deployment is ``NAME:ID`` (characters
            other than letters, digits, ``_.-`` in the id become ``_``).
        models: the served models (:class:`~localembed.server.models.ModelSpec`, e.g. from
            :func:`~localembed.server.models.read_config_file`).
        ingress_replicas: replicas of the ingress deployment.
        num_cpus_per_ingress: CPUs Ray reserves per ingress replica (None: Ray's default, 1).

    Returns:
        A bound ``ray.serve`` application: ``serve.run(app, route_prefix="/")``.

    Raises:
        ValueError: an invalid option or model table (the message names it).

    Examples:
        >>> from ray import serve  # doctest: +SKIP
        >>> serve.run(serve_application(min_replicas=1, max_replicas=4))  # doctest: +SKIP

    """
    from localembed.server.models import (
        check_contexts,
        check_specs,
        embedding_spec,
        reranker_spec,
    )
    from localembed.server.settings import ServerSettings

    settings = settings or ServerSettings()
    if models is None:
        config = config or EncoderConfig()
        models = [embedding_spec(config, settings.model_name)]
        if settings.reranker is not None:
            models.append(reranker_spec(settings.reranker, config))
    specs = check_contexts(check_specs(list(models)))  # errors, and context files, in the driver
    defaults: dict[str, Any] = {
        "num_replicas": num_replicas,
        "min_replicas": min_replicas,
        "max_replicas": max_replicas,
        "target_ongoing_requests": target_ongoing_requests,
        "max_ongoing_requests": max_ongoing_requests,
        "num_cpus": num_cpus_per_replica,
        "num_gpus": num_gpus_per_replica,
    }
    per_model = {spec.id: _deployment_options(spec, defaults) for spec in specs}
    if not isinstance(ingress_replicas, int) or ingress_replicas < 1:
        msg = f"ingress_replicas must be a positive int, got {ingress_replicas!r}"
        raise InputError(msg)
    serve = require("ray.serve", "serve_application")

    handles: dict[str, Any] = {}
    used: set[str] = {name}
    for spec in specs:
        deployment_name = _deployment_name(name, spec.id, used)
        deployment = serve.deployment(ModelReplica, name=deployment_name, **per_model[spec.id])
        handles[spec.id] = deployment.bind(spec, settings)
    ingress_options: dict[str, Any] = {"name": name, "num_replicas": ingress_replicas}
    ingress_options["max_ongoing_requests"] = max(
        [options["max_ongoing_requests"] for options in per_model.values()] or [100]
    ) * len(specs)
    if num_cpus_per_ingress is not None:
        ingress_options["ray_actor_options"] = {"num_cpus": num_cpus_per_ingress}
    ingress: Any = serve.deployment(serve.ingress()(Ingress), **ingress_options)
    return ingress.bind(specs, settings, handles)


def _deployment_options(spec: ModelSpec, defaults: dict[str, Any]) -> dict[str, Any]:
    """The ``serve.deployment`` options of ``spec``'s deployment (its ray table first)."""
    chosen = {**defaults, **spec.ray}
    if "num_replicas" in spec.ray and "min_replicas" not in spec.ray:
        chosen["min_replicas"] = chosen["max_replicas"] = None  # the table's fixed count wins
    where = f"model {spec.id!r}"
    low, high = chosen["min_replicas"], chosen["max_replicas"]
    if (low is None) != (high is None):
        msg = (
            f"{where}: autoscaling needs both min_replicas and max_replicas "
            "(or neither: num_replicas)"
        )
        raise InputError(msg)
    if low is not None and high is not None and not 0 <= low <= high:
        msg = f"{where}: need 0 <= min_replicas <= max_replicas, got {low} and {high}"
        raise InputError(msg)
    options: dict[str, Any] = {"max_ongoing_requests": chosen["max_ongoing_requests"]}
    if low is not None:
        options["autoscaling_config"] = {
            "min_replicas": low,
            "max_replicas": high,
            "target_ongoing_requests": chosen["target_ongoing_requests"],
        }
    else:
        options["num_replicas"] = chosen["num_replicas"]
    actor = {key: chosen[key] for key in ("num_cpus", "num_gpus") if chosen[key] is not None}
    if actor:
        options["ray_actor_options"] = actor
    return options


def _deployment_name(name: str, model_id: str, used: set[str]) -> str:
    """``NAME:ID`` with the id's unusual characters as ``_``, unique among ``used``.

    Example:
        >>> _deployment_name("localembed", "BAAI/bge-m3", set())
        'localembed:BAAI_bge-m3'

    """
    import re

    base = f"{name}:{re.sub(r'[^A-Za-z0-9_.-]', '_', model_id)}"
    chosen, number = base, 1
    while chosen in used:
        number += 1
        chosen = f"{base}-{number}"
    used.add(chosen)
    return chosen


class ModelReplica:
    """A replica of one model's deployment: the server's app for that model alone."""

    async def __init__(self, spec: ModelSpec, settings: ServerSettings) -> None:  # type: ignore[misc]
        from localembed.server.app import create_app
        from localembed.server.memory import bound_heap

        bound_heap()  # as localembed serve: new batch shapes must not grow the RSS
        self.app = create_app(models=[spec], settings=settings)
        self.state = self.app.state.localembed
        self.served = self.state.models[spec.id]
        self._lifespan = self.app.router.lifespan_context(self.app)
        await self._lifespan.__aenter__()
        await self.state.preloaded()  # Ray routes here once the model (to preload) is in
        if self.served.status == "failed":
            from localembed.errors import RuntimeFault

            msg = f"model {spec.id!r} failed to load: {self.served.error}"
            raise RuntimeFault(msg)

    async def forward(self, request: Forwarded) -> Answer:
        """Answer a request the ingress forwarded, as ``localembed serve`` would."""
        from localembed.server.remote import call_app

        return await call_app(self.app, request)

    def status(self) -> tuple[str, str | None]:
        """The model's status here ("loaded", "unloaded", ...) and its load error."""
        return self.served.status, self.served.error

    async def __del__(self) -> None:
        """Ray Serve's shutdown hook: stop the app's background tasks."""
        lifespan = self.__dict__.pop("_lifespan", None)  # once; absent if __init__ failed
        if lifespan is not None:
            await lifespan.__aexit__(None, None, None)


class Ingress:
    """The ingress replica: the server's routes, forwarding each request to its model."""

    def __init__(
        self, specs: list[ModelSpec], settings: ServerSettings, handles: dict[str, Any]
    ) -> None:
        self.specs = specs
        self.settings = settings
        self.handles = handles

    def __serve_build_asgi_app__(self) -> Any:
        """The app Ray Serve runs: ``create_app`` in forwarding mode."""
        from localembed.server.app import create_app
        from localembed.server.remote import Remote

        return create_app(
            models=self.specs,
            settings=self.settings,
            remote=Remote(forward=self._forward, statuses=self._statuses),
        )

    async def _forward(self, model_id: str, request: Forwarded) -> Answer:
        answer: Answer = await self.handles[model_id].forward.remote(request)
        return answer

    async def _statuses(self) -> dict[str, tuple[str, str | None]]:
        import asyncio

        async def one(model_id: str) -> tuple[str, tuple[str, str | None] | None]:
            try:
                status = await asyncio.wait_for(self.handles[model_id].status.remote(), 10)
            except Exception:  # a replica starting or gone: leave the model's entry as it is
                return model_id, None
            state, error = status
            return model_id, (str(state), None if error is None else str(error))

        answers = await asyncio.gather(*(one(model_id) for model_id in self.handles))
        return {model_id: status for model_id, status in answers if status is not None}
