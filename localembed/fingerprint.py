"""A model's fingerprint: one digest over the content of every file that shapes its vectors.

The embedding cache (:mod:`localembed.cache`) keys vectors by it, so that a changed weight,
config, tokenizer or head file (bge-m3's ``sparse_linear.pt``), or a sentence-transformers
module folder (pooling, Normalize), never serves the old model's vectors. ``localembed info``
prints it.

Every regular file under the model directory is hashed (SHA-256, by content, in path order)
except hidden entries (``.git``, ``.cache``) and files that cannot change a vector (``*.md``,
images, ``.gitattributes``): being generous costs one extra read of an unused file; missing a
file that matters would serve stale vectors. A file's digest is remembered by
(path, size, mtime, ctime, inode) for the life of the process, so a model is read once per
process, and a file rewritten in place is read again (also when its old size and mtime are
put back: the change time cannot be set).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from localembed.errors import ModelError
from localembed.forks import ForkSafeLock

__all__ = [
    "FINGERPRINT_SKIPPED_SUFFIXES",
    "LoadedFingerprint",
    "file_digest",
    "files_state",
    "model_fingerprint",
]

FINGERPRINT_SKIPPED_SUFFIXES = frozenset(
    {".md", ".png", ".jpg", ".jpeg", ".gif", ".svg", ".webp", ".lock"}
)
"""File endings left out of a fingerprint: documentation and images, never read by a model."""

_SKIPPED_NAMES = frozenset({".gitattributes", ".gitignore"})
_CHUNK = 1 << 20

_digests: dict[tuple[str, int, int, int, int], str] = {}
_lock = ForkSafeLock()


def file_digest(path: Path) -> str:
    """SHA-256 of ``path``'s content, remembered by (resolved path, size, mtime, ctime, inode).

    Example:
        >>> import tempfile, pathlib
        >>> file = pathlib.Path(tempfile.mkdtemp()) / "config.json"
        >>> _ = file.write_text("{}")
        >>> file_digest(file)[:12]
        '44136fa355b3'

    """
    resolved = path.resolve()
    stat = resolved.stat()
    # ctime and inode too: a rewrite that puts back size and mtime (os.utime, cp -p, rsync -t)
    # still changes ctime, which user space cannot set.
    memo = (str(resolved), stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino)
    with _lock:
        known = _digests.get(memo)
    if known is not None:
        return known
    digest = hashlib.sha256()
    with resolved.open("rb") as file:
        while block := file.read(_CHUNK):
            digest.update(block)
    value = digest.hexdigest()
    with _lock:
        _digests[memo] = value
    return value


def _counted(path: Path, root: Path) -> bool:
    relative = path.relative_to(root).parts
    if any(part.startswith(".") for part in relative):
        return False
    return path.name not in _SKIPPED_NAMES and path.suffix.lower() not in (
        FINGERPRINT_SKIPPED_SUFFIXES
    )


def _counted_files(root: Path) -> list[Path]:
    """The counted regular files under ``root``, in relative path order."""
    files: list[Path] = []
    for folder, names, filenames in os.walk(root, followlinks=True):
        names[:] = sorted(name for name in names if not name.startswith("."))
        files.extend(Path(folder) / name for name in filenames)
    ordered = sorted(files, key=lambda p: p.relative_to(root).as_posix())
    return [path for path in ordered if path.is_file() and _counted(path, root)]


def model_fingerprint(directory: Path) -> str:
    """The hex SHA-256 over the relative path and content digest of each counted file.

    Args:
        directory: the model's directory (a hub snapshot's symlinks are followed).

    Example:
        >>> import tempfile, pathlib
        >>> model = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (model / "config.json").write_text("{}")
        >>> _ = (model / "README.md").write_text("docs do not count")
        >>> before = model_fingerprint(model)
        >>> _ = (model / "README.md").write_text("still not")
        >>> model_fingerprint(model) == before
        True
        >>> _ = (model / "config.json").write_text('{"hidden_size": 8}')
        >>> model_fingerprint(model) == before
        False

    """
    root = Path(directory)
    total = hashlib.sha256(b"localembed-model-fingerprint-1\n")
    for path in _counted_files(root):
        total.update(f"{path.relative_to(root).as_posix()}\0{file_digest(path)}\n".encode())
    return total.hexdigest()


def files_state(directory: Path) -> tuple[tuple[str, int, int, int, int], ...]:
    """(relative path, size, mtime, ctime in ns, inode) of each counted file: a change check.

    The change time too: a file rewritten in place with its old size and mtime put back
    (``cp -p``, ``rsync -t``, ``os.utime``) keeps its inode, but not its ctime, which user
    space cannot set.

    Example:
        >>> import tempfile, pathlib
        >>> model = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (model / "config.json").write_text("{}")
        >>> [entry[:2] for entry in files_state(model)]
        [('config.json', 2)]

    """
    root = Path(directory)
    state = []
    for path in _counted_files(root):
        stat = path.stat()
        relative = path.relative_to(root).as_posix()
        state.append((relative, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino))
    return tuple(state)


class LoadedFingerprint:
    """The fingerprint of a model's files *as they were when the model was loaded*.

    The files' state (:func:`files_state`) is taken before the weights are read; the content
    fingerprint is computed on first use (only the cache and ``localembed info`` need it) and
    only if the files are still in that state: a model whose files were rewritten after it was
    loaded runs the old weights, which the new files' fingerprint must never key.

    Args:
        directory: the model's directory.
        name: the model as the user named it (for messages).
    """

    def __init__(self, directory: Path, name: str) -> None:
        self.directory = Path(directory)
        self.name = name
        self.state = files_state(self.directory)
        self._value: str | None = None
        self._lock = ForkSafeLock()

    def value(self) -> str:
        """The fingerprint (computed once).

        Raises:
            ModelError: the files changed since the model was loaded.
        """
        with self._lock:
            if self._value is None:
                value = model_fingerprint(self.directory)
                now = files_state(self.directory)
                if now != self.state:
                    changed = sorted({entry[0] for entry in set(now) ^ set(self.state)})
                    msg = (
                        f"the files of model {self.name!r} changed on disk since it was loaded "
                        f"({', '.join(changed[:3])}): the loaded weights are the old ones, so "
                        f"their vectors cannot be keyed by the files' content; call "
                        f"localembed.clear_encoder_cache() (or restart) to load the new files"
                    )
                    raise ModelError(msg)
                self._value = value
            return self._value
