"""OpenAI-style error bodies: ``{"error": {"message", "type", "param", "code"}}``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from localembed.faults import NonFiniteEmbeddingError

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "service_unavailable",
}


class ApiError(Exception):
    """An error the server answers with ``status`` and an OpenAI-style body."""

    def __init__(self, status: int, message: str, *, code: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param

    def body(self) -> dict[str, Any]:
        """The JSON body."""
        return error_body(self.status, self.message, code=self.code, param=self.param)


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


def non_finite_error(error: NonFiniteEmbeddingError, what: str = "input") -> ApiError:
    """A 422 naming the inputs whose output is NaN or infinite (the model's fault, not a 5xx)."""
    named = ", ".join(f"{what}[{row}]" for row in error.rows[:10])
    message = f"the model gave NaN or infinite values for {named}: {error}"
    param = f"{what}[{error.rows[0]}]" if error.rows else what
    return ApiError(422, message, code="non_finite_embedding", param=param)
