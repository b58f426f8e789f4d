"""Cache keys and the stored record: what a vector is keyed by, and how a stored one is checked.

A key is SHA-256 over a *namespace* (everything about the encoder that shapes a vector, see
:func:`namespace_digest`) and the text's exact code points. A record is::

    b"LE1" | dimension (uint32) | tokens (uint32) | flags (uint8) | float32 vector | checksum

with the checksum a 16-byte BLAKE2b over the key and everything before it, so a truncated
value, flipped bits, or a valid record copied under another key all fail :func:`decode` and
are recomputed, never returned; so does a record whose vector is not finite.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "KEY_FIELDS",
    "Record",
    "decode",
    "encode",
    "namespace_digest",
    "text_key",
]

MAGIC = b"LE1"
_HEADER = struct.Struct("<3sIIB")
_CHECKSUM_BYTES = 16
_TRUNCATED = 1

KEY_FIELDS = (
    "localembed_version",
    "runtime_versions",
    "model_fingerprint",
    "pooling",
    "normalize",
    "instruction",
    "max_length",
    "long_text",
    "truncate_dim",
    "dtype",
    "device_type",
    "backend",
    "quantize",
    "options",
    "stored",
)
"""What a namespace covers (every one must be given to :func:`namespace_digest`)."""


def namespace_digest(fields: dict[str, Any]) -> bytes:
    """SHA-256 of ``fields`` (exactly :data:`KEY_FIELDS`) as canonical JSON.

    Raises:
        ValueError: a field is missing or unknown (a key that forgets a setting would serve
            stale vectors).

    Example:
        >>> fields = dict.fromkeys(KEY_FIELDS, None)
        >>> len(namespace_digest(fields))
        32

    """
    if set(fields) != set(KEY_FIELDS):
        missing = sorted(set(KEY_FIELDS) - set(fields))
        extra = sorted(set(fields) - set(KEY_FIELDS))
        msg = f"cache namespace fields must be {KEY_FIELDS}; missing {missing}, unknown {extra}"
        raise ValueError(msg)
    canonical = json.dumps(fields, sort_keys=True, ensure_ascii=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("ascii")).digest()


def text_key(namespace: bytes, text: str) -> bytes:
    """The 32-byte key of ``text`` under ``namespace`` (its exact code points, lone surrogates too).

    Example:
        >>> ns = bytes(32)
        >>> text_key(ns, "a") != text_key(ns, "a ") != text_key(ns, "A")
        True

    """
    return hashlib.sha256(namespace + text.encode("utf-8", "surrogatepass")).digest()


@dataclass(frozen=True)
class Record:
    """One cached text: its finished float32 vector and what encoding it reported."""

    vector: np.ndarray
    """(dimension,) float32, bit-identical to the vector computed when it was stored."""
    tokens: int
    """Tokens the text ran as (instruction and special tokens included)."""
    truncated: bool
    """Whether the text was cut to max_length."""


def _checksum(key: bytes, body: bytes) -> bytes:
    return hashlib.blake2b(key + body, digest_size=_CHECKSUM_BYTES).digest()


def encode(key: bytes, record: Record) -> bytes:
    """The stored bytes of ``record`` under ``key``.

    Example:
        >>> record = Record(np.array([0.5, -1.0], np.float32), tokens=4, truncated=False)
        >>> data = encode(b"k" * 32, record)
        >>> decoded = decode(b"k" * 32, data)
        >>> decoded.vector.tobytes() == record.vector.tobytes(), decoded.tokens
        (True, 4)
        >>> decode(b"x" * 32, data) is None  # the right bytes under another key
        True

    """
    vector = np.ascontiguousarray(record.vector, dtype="<f4")
    flags = _TRUNCATED if record.truncated else 0
    body = _HEADER.pack(MAGIC, vector.shape[0], record.tokens, flags) + vector.tobytes()
    return body + _checksum(key, body)


def decode(key: bytes, data: bytes | None, dimension: int | None = None) -> Record | None:
    """The record in ``data`` if it is whole, finite and belongs to ``key``; None otherwise.

    Args:
        key: the key the data was read under.
        data: the stored bytes.
        dimension: the expected vector length (None: any).
    """
    if data is None or len(data) < _HEADER.size + _CHECKSUM_BYTES:
        return None
    body, checksum = data[:-_CHECKSUM_BYTES], data[-_CHECKSUM_BYTES:]
    if _checksum(key, body) != checksum:
        return None
    magic, width, tokens, flags = _HEADER.unpack_from(body)
    if magic != MAGIC or len(body) != _HEADER.size + 4 * width:
        return None
    if dimension is not None and width != dimension:
        return None
    vector = np.frombuffer(body, dtype="<f4", offset=_HEADER.size).astype(np.float32)
    if not np.isfinite(vector).all():  # never written by localembed: planted or foreign
        return None
    return Record(vector, tokens=tokens, truncated=bool(flags & _TRUNCATED))
