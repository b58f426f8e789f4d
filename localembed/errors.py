"""The errors localembed raises on purpose, under one base class.

Three families, so that a surface can tell whose fault an error is:

- :class:`InputError` / :class:`InputTypeError`: the caller's bad input (an argument value,
  a text, a request field). The server answers 4xx; the CLI prints one line.
- :class:`ModelError`: the model's files are missing, corrupt or not allowed (remote code,
  pickle weights). The server answers 500 and logs it; the CLI prints one line.
- :class:`RuntimeFault`: the run itself failed (out of memory, NaN output). The CLI prints
  one line.

Anything else that escapes localembed is a bug: the server answers 500 and logs the
traceback, the CLI prints the traceback. Each class also derives from the built-in
exception that callers caught before it existed (``ValueError``, ``TypeError``,
``OSError``, ``ImportError``), so ``except ValueError`` keeps working.

Example:
    >>> issubclass(InputError, ValueError) and issubclass(InputError, LocalEmbedError)
    True

"""

from __future__ import annotations

__all__ = [
    "InputError",
    "InputTypeError",
    "LocalEmbedError",
    "MissingExtraError",
    "ModelError",
    "RuntimeFault",
]


class LocalEmbedError(Exception):
    """The base of every error localembed raises on purpose; the message says what to do."""


class InputError(LocalEmbedError, ValueError):
    """The caller passed a bad value (an option, a text, a request field)."""


class InputTypeError(LocalEmbedError, TypeError):
    """The caller passed a value of the wrong type (a non-string text names its index)."""


class ModelError(LocalEmbedError):
    """The model cannot be used: files missing, corrupt, or refused (remote code, pickle)."""


class RuntimeFault(LocalEmbedError):
    """The computation failed (out of memory, non-finite output) although the input was valid."""


class MissingExtraError(LocalEmbedError, ImportError):
    """An optional dependency is not installed; the message names the extra that brings it."""
