"""Error bodies and the one rule of whose fault an error is.

OpenAI routes answer ``{"error": {"message", "type", "param", "code"}}``; the
text-embeddings-inference routes answer TEI's ``{"error", "error_type"}``. The server
answers 4xx only for the caller's errors (request validation and localembed's
:class:`~localembed.errors.InputError` / :class:`~localembed.errors.InputTypeError`), a
documented status for the conditions below, and 500 with the error logged for anything
else (:class:`~localembed.errors.ModelError`, a bug).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from localembed.errors import InputError, InputTypeError

if TYPE_CHECKING:
    from localembed.faults import NonFiniteEmbeddingError

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "service_unavailable",
}

TEI_PATHS = frozenset({"/", "/embed", "/embed_sparse", "/rerank", "/tokenize", "/info"})
"""Paths whose errors have text-embeddings-inference's body and statuses."""

TEI_ERROR_TYPES = {
    400: "Validation",
    401: "Validation",
    404: "Validation",
    405: "Validation",
    413: "Validation",
    422: "Validation",
    424: "Backend",
    429: "Overloaded",
    500: "Backend",
    503: "Unhealthy",
}
"""Status -> text-embeddings-inference's ``error_type``."""

EMPTY_INPUT = "empty_input"
"""The code of a request with no inputs (TEI's ``Empty`` error)."""

_TEI_VALIDATION = frozenset(
    {"invalid_request", "invalid_input", "invalid_dimensions", "input_too_long", "too_many_inputs"}
)


class ApiError(Exception):
    """An error the server answers with ``status`` and an error body naming ``param``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str,
        param: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.retry_after = retry_after if retry_after is not None else _retry(status)

    def body(self) -> dict[str, Any]:
        """The OpenAI-style JSON body."""
        return error_body(self.status, self.message, code=self.code, param=self.param)


def _retry(status: int) -> int | None:
    return 1 if status in {429, 503} else None


def error_body(status: int, message: str, *, code: str, param: str | None = None) -> dict[str, Any]:
    """``{"error": {...}}`` as OpenAI's API writes it.

    Example:
        >>> error_body(429, "the queue is full", code="queue_full")["error"]["type"]
        'rate_limit_error'

    """
    return {
        "error": {
            "message": message,
            "type": ERROR_TYPES.get(status, "invalid_request_error"),
            "param": param,
            "code": code,
        }
    }


def tei_error_body(status: int, message: str, error_type: str | None = None) -> dict[str, Any]:
    """``{"error", "error_type"}`` as text-embeddings-inference writes it.

    Example:
        >>> tei_error_body(413, "too many inputs")
        {'error': 'too many inputs', 'error_type': 'Validation'}

    """
    return {"error": message, "error_type": error_type or TEI_ERROR_TYPES.get(status, "Backend")}


def tei_error(status: int, code: str, message: str) -> tuple[int, dict[str, Any]]:
    """The status and body text-embeddings-inference answers for an error of ours.

    TEI answers a request it cannot validate (a field, an input too long, too many inputs)
    with 422 ``Validation``, no inputs with 400 ``Empty``, and a failure of the model with
    424 ``Backend``; a body over the size limit stays 413, a full queue 429 ``Overloaded``.

    Example:
        >>> tei_error(400, "input_too_long", "inputs[1] is too long")
        (422, {'error': 'inputs[1] is too long', 'error_type': 'Validation'})
        >>> tei_error(400, "empty_input", "inputs must not be empty")[1]["error_type"]
        'Empty'

    """
    if code == EMPTY_INPUT:
        return 400, tei_error_body(400, message, "Empty")
    if code in _TEI_VALIDATION and status in {400, 413}:
        status = 422
    elif status == 500:
        status = 424
    return status, tei_error_body(status, message)


def non_finite_error(error: NonFiniteEmbeddingError, what: str = "input") -> ApiError:
    """A 422 naming the inputs whose output is NaN or infinite.

    The input is valid and the model is what it is: not a 5xx (nothing to retry, nothing
    the operator can fix per request), and the caller learns which inputs to drop.
    """
    named = ", ".join(f"{what}[{row}]" for row in error.rows[:10])
    message = f"the model gave NaN or infinite values for {named}: {error}"
    param = f"{what}[{error.rows[0]}]" if error.rows else what
    return ApiError(422, message, code="non_finite_embedding", param=param)


def api_error_of(error: BaseException, what: str = "input") -> ApiError | None:
    """The 4xx/503 that a library error means, or None: a 500 (the model's fault or a bug).

    - :class:`InputError` / :class:`InputTypeError`: the caller's input, 400 naming ``what``.
    - ``NonFiniteEmbeddingError``: 422 naming the inputs.
    - ``EncoderOutOfMemoryError``: 503 (retry later, or with fewer inputs).
    """
    from localembed.faults import EncoderOutOfMemoryError, NonFiniteEmbeddingError

    if isinstance(error, NonFiniteEmbeddingError):
        return non_finite_error(error, what)
    if isinstance(error, EncoderOutOfMemoryError):
        return ApiError(503, str(error), code="out_of_memory")
    if isinstance(error, InputError | InputTypeError):
        return ApiError(400, str(error), code="invalid_input", param=what)
    return None


def paths_of(model: Any, given: str | None) -> set[str]:
    """The ways a model's directory may be written: as given, expanded, resolved.

    The given one counts when it exists or looks like a path (a separator, ``~`` or ``.``
    in front): a missing directory's path is in its error message too.
    """
    paths = set()
    for value in (getattr(getattr(model, "source", None), "path", None), given):
        if value is None:
            continue
        text = str(value)
        path = Path(text).expanduser()
        if path.exists():
            paths |= {text, str(path), str(path.resolve())}
        elif os.sep in text or text.startswith(("~", ".")):
            paths |= {text, str(path), str(path.absolute())}
    return {path for path in paths if path not in {".", ""}}


def hide_paths(value: Any, paths: set[str], name: str) -> Any:
    """``value`` with every file-system path in it replaced (a server shows no paths).

    A known model path becomes ``name``; any other absolute path its last part.

    Example:
        >>> hide_paths({"path": "/srv/m/bge", "note": "in /srv/m/bge/x"}, {"/srv/m/bge"}, "bge")
        {'path': 'bge', 'note': 'in bge/x'}

    """
    if isinstance(value, dict):
        return {key: hide_paths(item, paths, name) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [hide_paths(item, paths, name) for item in value]
    if not isinstance(value, str):
        return value
    for path in sorted(paths, key=len, reverse=True):
        value = value.replace(path, name)
    if os.path.isabs(value) and "\n" not in value:
        return Path(value).name
    return value
