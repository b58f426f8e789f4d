"""``GET /v1/models``, ``GET /health`` and ``GET /metrics``: what is served, and how it goes."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from localembed.server.embeddings import ROUTED_MODEL, state_of
from localembed.server.schemas import ModelList

router = APIRouter()


@router.get("/v1/models", response_model=ModelList, summary="Every served model, loaded or not")
async def models(request: Request) -> dict[str, Any]:
    """OpenAI's model list, with each model's kind, state and whether it is the default."""
    state = state_of(request)
    await state.refresh()
    return {
        "object": "list",
        "data": [
            {
                "id": served.id,
                "object": "model",
                "created": 0,
                "owned_by": "localembed",
                "kind": served.kind,
                "loaded": served.status == "loaded",
                "status": served.status,
                "default": served.spec.default,
            }
            for served in state.models.values()
        ],
    }


@router.head("/health", include_in_schema=False, response_model=None)
@router.get(
    "/health",
    summary="Ready (200), or preloading / a preload failed / shutting down (503)",
    response_model=None,
)
async def health(request: Request) -> JSONResponse:
    """200 once the models to preload are loaded (models loaded on demand do not count)."""
    state = state_of(request)
    await state.refresh()
    failed = {
        served.id: served.error
        for served in state.models.values()
        if served.status == "failed" and served.preload
    }
    loaded = [served.id for served in state.models.values() if served.status == "loaded"]
    if failed:
        error = "; ".join(f"{model_id}: {error}" for model_id, error in failed.items())
        body = {"status": "failed", "error": error, "loaded": loaded}
        return JSONResponse(body, status_code=503)
    if state.preloading:
        return JSONResponse({"status": "loading", "error": None, "loaded": loaded}, status_code=503)
    default = state.default("embedding") or state.default("reranker")
    return JSONResponse(
        {"status": "ok", "model": default.id if default else None, "loaded": loaded}
    )


@router.get("/metrics", summary="Prometheus metrics", response_class=Response, response_model=None)
async def prometheus(request: Request) -> Response:
    """The text exposition format; series per model carry a ``model`` label.

    In a forwarding app (Ray Serve's ingress), ``/models/ID/metrics`` is the metrics of a
    replica of model ID (the ingress's own are at ``/metrics``).
    """
    state = state_of(request)
    routed = request.scope.get(ROUTED_MODEL)
    if state.remote is not None and routed is not None:
        from localembed.server.remote import ForwardRequest

        raise ForwardRequest(state.names[routed])
    content, content_type = state.metrics.exposition()
    return Response(content, media_type=content_type)
