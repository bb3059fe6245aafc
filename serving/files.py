"""Atomic writes: a file or directory appears under its name complete or not at all.

Every writer of checkpoints, exports, bundles, outputs and plots goes through this module,
so an interrupted write never replaces a good file, and there is one name for what an
interrupted write leaves behind: `STEM.partial-TOKEN.EXT` beside the target (the
extension is kept, since Keras, matplotlib and onnx choose formats by it), and
`STEM.old-TOKEN.EXT` for a directory moved aside while its replacement moves in.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import uuid

PARTIAL, OLD = "partial", "old"


def _split(name: str) -> tuple[str, str]:
    stem, dot, rest = name.partition(".")
    return stem, dot + rest


def temporary_path(path: str, kind: str = PARTIAL) -> str:
    """A fresh name beside `path` for a file or directory on its way to (or from) `path`."""
    directory, name = os.path.split(os.path.abspath(path))
    stem, extension = _split(name)
    return os.path.join(directory, f"{stem}.{kind}-{uuid.uuid4().hex[:8]}{extension}")


def is_temporary_of(entry: str, name: str, kind: str = PARTIAL) -> bool:
    """Whether the directory entry `entry` is a `temporary_path` of `name`."""
    stem, extension = _split(name)
    return re.fullmatch(re.escape(f"{stem}.{kind}-") + r"[^.]+" + re.escape(extension), entry) is not None


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        os.remove(path)


@contextlib.contextmanager
def atomic_path(path: str):
    """Yields a temporary path beside `path` for a writer that takes a path (Keras,
    onnx, matplotlib); renames it to `path` when the block ends without an error, and
    removes it when the block fails."""
    path = os.fspath(path)
    temporary = temporary_path(path)
    try:
        yield temporary
        os.replace(temporary, path)
    except BaseException:
        _remove(temporary)
        raise


@contextlib.contextmanager
def atomic_write(
    path: str, mode: str = "w", *, encoding: str | None = "utf-8", newline: str | None = None, fsync: bool = False
):
    """`open(path, mode)` for writing, renamed into place when the block ends without an
    error; with `fsync`, flushed to disk first (state that a resume reads after a crash)."""
    binary = "b" in mode
    with atomic_path(path) as temporary:
        with open(temporary, mode, encoding=None if binary else encoding, newline=newline) as handle:
            yield handle
            if fsync:
                handle.flush()
                os.fsync(handle.fileno())


def replace_directory(new_dir: str, out_dir: str) -> None:
    """Moves the complete directory `new_dir` to `out_dir`. An existing `out_dir` is
    moved aside first and removed last, so a kill at any point leaves either directory
    whole; `recover_directory` puts things right after one."""
    old = None
    if os.path.exists(out_dir):
        old = temporary_path(out_dir, OLD)
        os.replace(out_dir, old)
    os.replace(new_dir, out_dir)
    if old:
        shutil.rmtree(old, ignore_errors=True)


def recover_directory(out_dir: str) -> None:
    """Cleans up after a writer of `out_dir` that was killed: removes its partial
    directories, and where the kill came between the two renames of `replace_directory`
    (the old directory moved aside, the new one not yet in place), moves the old one back.
    One writer per target at a time."""
    parent, name = os.path.split(os.path.abspath(out_dir))
    if not os.path.isdir(parent):
        return
    for entry in sorted(os.listdir(parent)):
        path = os.path.join(parent, entry)
        if is_temporary_of(entry, name, PARTIAL):
            _remove(path)
        elif is_temporary_of(entry, name, OLD):
            if os.path.exists(out_dir):
                _remove(path)
            else:
                os.replace(path, out_dir)
