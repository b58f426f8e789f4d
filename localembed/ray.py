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


# -- Ray Serve: the HTTP server on replicas ------------------------------------------------


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
) -> Any:
    """A Ray Serve application of the ``localembed serve`` app (same endpoints and errors).

    Each replica loads the model once, in its constructor (so it is ready when Ray routes to
    it), and runs the FastAPI app of :func:`localembed.server.create_app`, with its own
    micro-batcher; Ray Serve's proxy spreads requests over the replicas. Settings are
    checked here, in the driver.

    Args:
        config: the encoder's settings (default: the embedded model).
        settings: the server's limits and key (:class:`~localembed.server.ServerSettings`).
        num_replicas: a fixed number of replicas (ignored with min/max_replicas).
        min_replicas: with ``max_replicas``: autoscale between these bounds.
        max_replicas: the autoscaling upper bound.
        target_ongoing_requests: autoscaling target of requests in progress per replica.
        max_ongoing_requests: requests Ray hands one replica at once (its micro-batcher
            merges them; keep it well above 1).
        num_cpus_per_replica: CPUs Ray reserves per replica (None: Ray's default, 1).
        num_gpus_per_replica: GPUs per replica (None: 0).
        name: the deployment's name.

    Returns:
        A bound ``ray.serve`` application: ``serve.run(app, route_prefix="/")``.

    Examples:
        >>> from ray import serve  # doctest: +SKIP
        >>> serve.run(serve_application(min_replicas=1, max_replicas=4))  # doctest: +SKIP

    """
    from localembed.server.settings import ServerSettings

    config = with_context_loaded(config or EncoderConfig())
    settings = settings or ServerSettings()
    if (min_replicas is None) != (max_replicas is None):
        msg = "autoscaling needs both min_replicas and max_replicas (or neither: num_replicas)"
        raise InputError(msg)
    if (
        min_replicas is not None
        and max_replicas is not None
        and not 0 <= min_replicas <= max_replicas
    ):
        msg = f"need 0 <= min_replicas <= max_replicas, got {min_replicas} and {max_replicas}"
        raise InputError(msg)
    serve = require("ray.serve", "serve_application")

    def build_app() -> Any:  # runs on each replica
        from localembed.encoder import get_encoder
        from localembed.server.app import create_app

        return create_app(encoder=get_encoder(config), settings=settings)

    class LocalembedReplica:
        """One replica: the app from ``build_app`` (Ray Serve calls it as the ingress)."""

    options: dict[str, Any] = {"name": name, "max_ongoing_requests": max_ongoing_requests}
    if min_replicas is not None:
        options["autoscaling_config"] = {
            "min_replicas": min_replicas,
            "max_replicas": max_replicas,
            "target_ongoing_requests": target_ongoing_requests,
        }
    else:
        options["num_replicas"] = num_replicas
    actor_options: dict[str, Any] = {}
    if num_cpus_per_replica is not None:
        actor_options["num_cpus"] = num_cpus_per_replica
    if num_gpus_per_replica is not None:
        actor_options["num_gpus"] = num_gpus_per_replica
    if actor_options:
        options["ray_actor_options"] = actor_options
    deployment: Any = serve.deployment(serve.ingress(build_app)(LocalembedReplica), **options)
    return deployment.bind()
