"""The shared cache store: a Redis or Valkey server named by a ``redis://`` / ``rediss://`` URL.

Values are plain strings under ``localembed:v1:<key>``: one ``MGET`` per lookup, one pipelined
batch of ``SET`` per write (each ``SET`` is atomic, so a reader sees a whole value or none).
Eviction is the server's own: give it ``maxmemory`` and ``maxmemory-policy allkeys-lru`` (a
client never changes a shared server's settings); the evictions reported are the server's
``evicted_keys``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from localembed.extras import require

__all__ = ["KEY_PREFIX", "RedisStore"]

KEY_PREFIX = b"localembed:v1:"
"""Every cache key on the server starts with this."""

_BATCH = 1000


class RedisStore:
    """Key -> bytes on a Redis/Valkey server.

    Args:
        url: ``redis://[user:password@]host:port/db`` (or ``rediss://`` for TLS).
    """

    kind = "redis"

    def __init__(self, url: str) -> None:
        redis = require("redis", "cache='redis://...'")
        self.url = url
        self._client: Any = redis.Redis.from_url(url)

    def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        """The stored bytes of each key (None: absent)."""
        values: list[bytes | None] = []
        for start in range(0, len(keys), _BATCH):
            part = [KEY_PREFIX + key for key in keys[start : start + _BATCH]]
            values.extend(self._client.mget(part))
        return values

    def put_many(self, items: Sequence[tuple[bytes, bytes]]) -> int:
        """Store each (key, value); the server evicts (0 evictions counted here)."""
        for start in range(0, len(items), _BATCH):
            pipe = self._client.pipeline(transaction=False)
            for key, value in items[start : start + _BATCH]:
                pipe.set(KEY_PREFIX + key, value)
            pipe.execute()
        return 0

    def delete(self, keys: Sequence[bytes]) -> None:
        """Remove ``keys`` (a corrupt entry, before it is recomputed)."""
        if keys:
            self._client.delete(*(KEY_PREFIX + key for key in keys))

    def size(self) -> tuple[int, int]:
        """(keys in the database, the server's used_memory bytes): the whole database's."""
        memory = self._client.info("memory")
        return int(self._client.dbsize()), int(memory["used_memory"])

    def evictions(self) -> int:
        """Keys the server evicted (``evicted_keys``: all of the server's, since it started)."""
        return int(self._client.info("stats")["evicted_keys"])

    def close(self) -> None:
        """Close the client's connections."""
        self._client.close()
