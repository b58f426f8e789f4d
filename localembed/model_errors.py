"""The errors of a model's files: not found, damaged, unsupported, or shipping its own code.

Each is a :class:`~localembed.errors.ModelError` (the model's files are at fault, not the
caller's input nor the runtime). :mod:`localembed.loading` re-exports the public ones.
"""

from __future__ import annotations

from localembed.errors import ModelError

__all__ = [
    "MissingModelFileError",
    "ModelFileError",
    "ModelNotFoundError",
    "RemoteCodeError",
    "UnsupportedModelError",
]


class ModelNotFoundError(ModelError, FileNotFoundError):
    """No model could be found under the given name; the message lists what was tried."""


class ModelFileError(ModelError, OSError):
    """A model file is truncated, corrupt or does not fit the model (message: file and fix).

    An ``OSError``, like :class:`ModelNotFoundError`: the trouble is with files on disk.
    """


class MissingModelFileError(ModelFileError, FileNotFoundError):
    """A file the model needs is missing; the message names the file and the fix."""


class UnsupportedModelError(ModelError, ValueError):
    """The model is of a kind localembed cannot run (its modules, a slow-only tokenizer)."""


class RemoteCodeError(ModelError, ValueError):
    """The model ships its own Python code and ``trust_remote_code`` is off.

    Through an adapter (a pydantic model) it arrives as a ``ValidationError`` (a
    ``ValueError``) with the same message.
    """
