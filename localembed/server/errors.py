"""Error bodies and the one rule of whose fault an error is.

OpenAI routes answer ``{"error": {"message", "type", "param", "code"}}``; the
text-embeddings-inference routes answer TEI's ``{"error", "error_type"}``. The server
answers 4xx only for the caller's errors (request validation and localembed's
:class:`~localembed.errors.InputError` / :class:`~localembed.errors.InputTypeError`), a
documented status for the conditions below, and 500 with the error logged for anything
else (:class:`~localembed.errors.ModelError`, a bug).
"""

from __future__ import annotations

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

TEI_ERROR_TYPES = {
    400: "Validation",
    401: "Validation",
    404: "Validation",
    413: "Validation",
    422: "Validation",
    429: "Overloaded",
    500: "Backend",
    503: "Unhealthy",
}
"""Status -> text-embeddings-inference's ``error_type``."""


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


def tei_error_body(status: int, message: str) -> dict[str, Any]:
    """``{"error", "error_type"}`` as text-embeddings-inference writes it.

    Example:
        >>> tei_error_body(413, "too many inputs")
        {'error': 'too many inputs', 'error_type': 'Validation'}

    """
    return {"error": message, "error_type": TEI_ERROR_TYPES.get(status, "Backend")}


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
