"""The embedded cache store: one SQLite database in WAL mode in a directory (standard library).

- Many readers and one writer at a time, across threads and processes (two CLI runs on one
  directory): every write is one ``BEGIN IMMEDIATE`` transaction, so a row is whole or absent;
  a busy database is waited for (``busy_timeout``), never skipped.
- LRU under a size cap: each hit stamps its key's ``used`` time (in a small table of its own,
  so that a hit never rewrites a vector's row); after a write that takes the stored bytes over
  ``max_bytes`` the least recently used rows are deleted, in the same transaction, until they
  fit. Stored bytes and rows are kept by triggers in a ``meta`` table,
  so the cap never scans the table.
- A damaged database file (not a database, truncated, overwritten pages: SQLite's
  ``SQLITE_NOTADB``/``SQLITE_CORRUPT``), found when it is opened or at any later statement,
  is renamed ``embeddings.sqlite3.damaged-<time>`` with a warning, and an empty database
  takes its place: its vectors are recomputed, never read from it. Another process that has
  the old file open notices at its next statement (the path names another file now) and opens
  the new one.
- A directory that cannot hold a database (not writable, a file, a dangling link) is an
  :class:`~localembed.errors.InputError` naming it when the store opens; a statement that fails
  later for another reason (disk full, permissions changed) is a
  :class:`~localembed.errors.RuntimeFault` naming the database.
- No SQLite state crosses a fork: just before it, each store waits for a statement in flight
  and closes its connection; parent and child each open a new one at their next statement,
  and the child's lock is a new one (:class:`~localembed.forks.ForkSafeLock`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

from localembed.errors import InputError, RuntimeFault
from localembed.forks import ForkSafeLock

__all__ = ["DATABASE_NAME", "SQLiteStore"]

logger = logging.getLogger("localembed")
T = TypeVar("T")

DATABASE_NAME = "embeddings.sqlite3"
"""The database file inside the cache directory (with its -wal and -shm files)."""

_BATCH = 500  # host parameters per statement (SQLite's default limit is 32766; stay small)
_BUSY_MS = 60_000
_DAMAGED_CODES = (11, 26)  # SQLITE_CORRUPT, SQLITE_NOTADB
_DAMAGED_WORDS = ("file is not a database", "database disk image is malformed")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    key BLOB PRIMARY KEY,
    value BLOB NOT NULL,
    size INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS usage (key BLOB PRIMARY KEY, used INTEGER NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS usage_used ON usage (used);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta VALUES ('bytes', 0), ('entries', 0), ('evictions', 0);
CREATE TRIGGER IF NOT EXISTS entries_insert AFTER INSERT ON entries BEGIN
    UPDATE meta SET value = value + NEW.size WHERE name = 'bytes';
    UPDATE meta SET value = value + 1 WHERE name = 'entries';
END;
CREATE TRIGGER IF NOT EXISTS entries_delete AFTER DELETE ON entries BEGIN
    UPDATE meta SET value = value - OLD.size WHERE name = 'bytes';
    UPDATE meta SET value = value - 1 WHERE name = 'entries';
    DELETE FROM usage WHERE key = OLD.key;
END;
CREATE TRIGGER IF NOT EXISTS entries_resize AFTER UPDATE OF size ON entries BEGIN
    UPDATE meta SET value = value + NEW.size - OLD.size WHERE name = 'bytes';
END;
"""


class SQLiteStore:
    """Key -> bytes in ``directory/embeddings.sqlite3``, LRU-evicted above ``max_bytes``.

    Args:
        directory: created if absent.
        max_bytes: the most value bytes kept (None: no cap).

    Example:
        >>> import tempfile
        >>> store = SQLiteStore(tempfile.mkdtemp(), max_bytes=None)
        >>> store.put_many([(b"k", b"value")])
        0
        >>> store.get_many([b"k", b"missing"])
        [b'value', None]
        >>> store.size()
        (1, 5)

    """

    kind = "sqlite"

    def __init__(self, directory: str | Path, *, max_bytes: int | None) -> None:
        self.directory = Path(directory).expanduser()
        self.path = self.directory / DATABASE_NAME
        self.max_bytes = max_bytes
        self._lock = ForkSafeLock()
        self._db: sqlite3.Connection | None = None
        self._file: tuple[int, int] | None = None
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            with self._lock:
                self._open()
        except (OSError, sqlite3.Error) as error:
            if isinstance(error, sqlite3.Error) and _code(error) not in _UNUSABLE_CODES:
                failure = f"{type(error).__name__}: {error}"
                msg = f"the embedding cache {str(self.path)!r} could not be opened: {failure}"
                raise RuntimeFault(msg) from error  # busy, I/O: not the directory's fault
            msg = (
                f"the embedding cache directory {str(self.directory)!r} cannot hold a database "
                f"({type(error).__name__}: {error}); give a directory this process can create "
                f"and write (SQLite writes {DATABASE_NAME} and its -wal and -shm files there)"
            )
            raise InputError(msg) from error
        _stores.add(self)

    def _open(self) -> sqlite3.Connection:
        """Connect (under the lock); a damaged database is set aside first.

        The path is looked at before and after connecting: if another process set the file
        aside meanwhile, the connection is on the renamed file, so it connects again.
        """
        for _ in range(5):
            before = _file_identity(self.path)
            try:
                db = self._connect()
            except sqlite3.DatabaseError as error:
                if not _is_damaged(error):
                    raise
                self._set_aside(error, before)
                continue
            after = _file_identity(self.path)
            if after is not None and before in (None, after):
                self._db, self._file = db, after
                return db
            db.close()
        msg = f"the embedding cache {self.path} kept being replaced while it was opened"
        raise sqlite3.OperationalError(msg)

    def _connection(self) -> sqlite3.Connection:
        """The open connection (under the lock), reopened if the path names another file now.

        Another process may have set a damaged database aside (renamed it) and created a new
        one: this connection would keep reading and writing the renamed file. (No connection
        crosses a fork: :func:`_close_before_fork` closes it first.)
        """
        if self._db is not None and _file_identity(self.path) == self._file:
            return self._db
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            logger.info("the embedding cache %s was replaced on disk: reopened", self.path)
        return self._open()

    def _connect(self) -> sqlite3.Connection:
        # One connection per store, used under a lock (sqlite3 serializes it anyway).
        db = sqlite3.connect(
            self.path, timeout=_BUSY_MS / 1000, isolation_level=None, check_same_thread=False
        )
        try:
            db.execute(f"PRAGMA busy_timeout = {_BUSY_MS}")
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = NORMAL")
            db.execute("PRAGMA cache_size = -65536")  # 64 MiB of pages
            db.executescript(_SCHEMA)  # idempotent; each statement commits by itself
        except BaseException:
            db.close()
            raise
        return db

    def _set_aside(self, error: sqlite3.DatabaseError, found: tuple[int, int] | None) -> None:
        """Rename the damaged database (and its -wal, -shm files) out of the way.

        Only if the path still names the file found damaged (``found``): another process that
        found the same damage may have set it aside and created a new database already. The
        check and the renames hold an exclusive lock on ``embeddings.sqlite3.lock`` against
        other processes doing the same.
        """
        aside = f"{DATABASE_NAME}.damaged-{time.time_ns()}"
        with _directory_lock(self.directory):
            if found is None or _file_identity(self.path) != found:
                return  # already set aside (and maybe replaced) by someone else
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    (self.directory / f"{DATABASE_NAME}{suffix}").rename(
                        self.directory / f"{aside}{suffix}"
                    )
        logger.warning(
            "the embedding cache %s is damaged (%s): renamed to %s; an empty cache replaces it "
            "and its vectors are recomputed",
            self.path,
            error,
            aside,
        )

    def _guarded(self, operation: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``operation`` under the lock; a damaged database is set aside and run again."""
        with self._lock:
            try:
                try:
                    return operation(self._connection())
                except sqlite3.DatabaseError as error:
                    if not _is_damaged(error):
                        raise
                    if self._db is not None:
                        self._db.close()
                        self._db = None
                    self._set_aside(error, self._file)
                    return operation(self._open())
            except (OSError, sqlite3.Error) as error:
                failure = f"{type(error).__name__}: {error}"
                msg = f"the embedding cache {str(self.path)!r} failed: {failure}"
                raise RuntimeFault(msg) from error

    def _write(self, body: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``body`` in one ``BEGIN IMMEDIATE`` transaction (guarded)."""

        def transaction(db: sqlite3.Connection) -> T:
            db.execute("BEGIN IMMEDIATE")
            try:
                result = body(db)
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
            return result

        return self._guarded(transaction)

    def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        """The stored bytes of each key (None: absent); hits become the most recently used."""

        def read(db: sqlite3.Connection) -> dict[bytes, bytes]:
            found: dict[bytes, bytes] = {}
            for start in range(0, len(keys), _BATCH):
                part = list(keys[start : start + _BATCH])
                marks = ",".join("?" * len(part))
                rows = db.execute(f"SELECT key, value FROM entries WHERE key IN ({marks})", part)
                found.update((bytes(k), bytes(v)) for k, v in rows)
            return found

        found = self._guarded(read)
        if found:
            self._touch(list(found))
        return [found.get(key) for key in keys]

    def _touch(self, keys: list[bytes]) -> None:
        now = time.time_ns()

        def touch(db: sqlite3.Connection) -> None:
            for start in range(0, len(keys), _BATCH):
                part = keys[start : start + _BATCH]
                marks = ",".join("?" * len(part))
                db.execute(f"UPDATE usage SET used = ? WHERE key IN ({marks})", [now, *part])

        self._write(touch)

    def put_many(self, items: Sequence[tuple[bytes, bytes]]) -> int:
        """Store each (key, value) (replacing what a key held); return the rows evicted."""
        if not items:
            return 0
        now = time.time_ns()

        def write(db: sqlite3.Connection) -> int:
            db.executemany(
                "INSERT INTO entries (key, value, size) VALUES (?, ?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value, size = excluded.size",
                [(key, value, len(value)) for key, value in items],
            )
            db.executemany(
                "INSERT INTO usage (key, used) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET used = excluded.used",
                [(key, now) for key, _ in items],
            )
            return self._evict(db)

        return self._write(write)

    def _evict(self, db: sqlite3.Connection) -> int:
        if self.max_bytes is None:
            return 0
        evicted = 0
        while True:
            (stored,) = db.execute("SELECT value FROM meta WHERE name = 'bytes'").fetchone()
            over = stored - self.max_bytes
            if over <= 0:
                break
            # Oldest rows first, enough of them to cover the excess (at least one).
            rows = db.execute(
                "SELECT usage.key, entries.size FROM usage JOIN entries USING (key) "
                "ORDER BY usage.used LIMIT ?",
                (_BATCH,),
            ).fetchall()
            if not rows:
                break
            doomed: list[bytes] = []
            for key, size in rows:
                doomed.append(key)
                over -= size
                if over <= 0:
                    break
            marks = ",".join("?" * len(doomed))
            db.execute(f"DELETE FROM entries WHERE key IN ({marks})", doomed)
            evicted += len(doomed)
        if evicted:
            db.execute("UPDATE meta SET value = value + ? WHERE name = 'evictions'", (evicted,))
        return evicted

    def delete(self, keys: Sequence[bytes]) -> None:
        """Remove ``keys`` (a corrupt entry, before it is recomputed)."""
        if not keys:
            return
        marks = ",".join("?" * len(keys))
        self._write(
            lambda db: db.execute(f"DELETE FROM entries WHERE key IN ({marks})", list(keys))
        )

    def size(self) -> tuple[int, int]:
        """(rows, value bytes) stored now, by every process using this directory."""
        rows = dict(self._guarded(lambda db: db.execute("SELECT name, value FROM meta").fetchall()))
        return int(rows["entries"]), int(rows["bytes"])

    def evictions(self) -> int:
        """Rows evicted from this directory so far, by every process."""
        (value,) = self._guarded(
            lambda db: db.execute("SELECT value FROM meta WHERE name = 'evictions'").fetchone()
        )
        return int(value)

    def close(self) -> None:
        """Close the database connection (a later statement opens it again)."""
        with self._lock:
            if self._db is not None:
                self._db.close()
            self._db = None


@contextlib.contextmanager
def _directory_lock(directory: Path) -> Iterator[None]:
    """An exclusive lock between processes (``flock`` on a file beside the database)."""
    import fcntl

    with (directory / f"{DATABASE_NAME}.lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


_stores: weakref.WeakSet[SQLiteStore] = weakref.WeakSet()


def _close_before_fork() -> None:
    # A child must inherit no SQLite state at all: SQLite keeps each file's lock bookkeeping
    # in process memory, so a child of a process with the file open would use the parent's
    # (its writes would see a lock held forever, and other processes would not see the child).
    # Each store's lock is taken (a transaction in flight finishes first) and its connection
    # closed; the parent reopens at its next statement.
    for store in list(_stores):
        store._lock.acquire()
        if store._db is not None:
            with contextlib.suppress(sqlite3.Error):
                store._db.close()
        store._db = None
        _held.append(store)


def _release_after_fork_in_parent() -> None:
    while _held:
        _held.pop()._lock.release()


_held: list[SQLiteStore] = []
os.register_at_fork(before=_close_before_fork, after_in_parent=_release_after_fork_in_parent)
os.register_at_fork(after_in_child=_held.clear)  # the child's locks are new (ForkSafeLock)


def _file_identity(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return (stat.st_dev, stat.st_ino)


_UNUSABLE_CODES = (3, 8, 14, 23)  # SQLITE_PERM, _READONLY, _CANTOPEN, _AUTH


def _code(error: sqlite3.Error) -> int | None:
    code = getattr(error, "sqlite_errorcode", None)  # Python 3.11+
    return None if code is None else int(code) & 0xFF


def _is_damaged(error: sqlite3.DatabaseError) -> bool:
    """Whether ``error`` says the database file is damaged (not busy, not a bad statement)."""
    code = _code(error)
    if code is not None:
        return code in _DAMAGED_CODES
    return any(words in str(error) for words in _DAMAGED_WORDS)
