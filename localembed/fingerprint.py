"""A model's fingerprint: one digest over the content of every file that shapes its vectors.

The embedding cache (:mod:`localembed.cache`) keys vectors by it, so that a changed weight,
config, tokenizer or head file (bge-m3's ``sparse_linear.pt``), or a sentence-transformers
module folder (pooling, Normalize), never serves the old model's vectors. ``localembed info``
prints it.

Every regular file under the model directory is hashed (SHA-256, by content, in path order)
except hidden entries (``.git``, ``.cache``) and files that cannot change a vector (``*.md``,
images, ``.gitattributes``): being generous costs one extra read of an unused file; missing a
file that matters would serve stale vectors. A file's digest is remembered by
(path, size, mtime) for the life of the process, so a model is read once per process, and a
file rewritten in place (new mtime or size) is read again.
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

__all__ = ["FINGERPRINT_SKIPPED_SUFFIXES", "file_digest", "model_fingerprint"]

FINGERPRINT_SKIPPED_SUFFIXES = frozenset(
    {".md", ".png", ".jpg", ".jpeg", ".gif", ".svg", ".webp", ".lock"}
)
"""File endings left out of a fingerprint: documentation and images, never read by a model."""

_SKIPPED_NAMES = frozenset({".gitattributes", ".gitignore"})
_CHUNK = 1 << 20

_digests: dict[tuple[str, int, int], str] = {}
_lock = threading.Lock()


def file_digest(path: Path) -> str:
    """SHA-256 of ``path``'s content, remembered by (resolved path, size, mtime in ns).

    Example:
        >>> import tempfile, pathlib
        >>> file = pathlib.Path(tempfile.mkdtemp()) / "config.json"
        >>> _ = file.write_text("{}")
        >>> file_digest(file)[:12]
        '44136fa355b3'

    """
    resolved = path.resolve()
    stat = resolved.stat()
    memo = (str(resolved), stat.st_size, stat.st_mtime_ns)
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
    files: list[Path] = []
    for folder, names, filenames in os.walk(root, followlinks=True):
        names[:] = sorted(name for name in names if not name.startswith("."))
        files.extend(Path(folder) / name for name in filenames)
    total = hashlib.sha256(b"localembed-model-fingerprint-1\n")
    for path in sorted(files, key=lambda p: p.relative_to(root).as_posix()):
        if not path.is_file() or not _counted(path, root):
            continue
        total.update(f"{path.relative_to(root).as_posix()}\0{file_digest(path)}\n".encode())
    return total.hexdigest()
