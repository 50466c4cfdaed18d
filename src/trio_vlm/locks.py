"""One writer per answers file: an exclusive, non-blocking lock next to the file (``<file>.lock``).

The lock is an OS advisory lock (``fcntl.flock``): it is released when the process ends, also when it is
killed, so an interrupted run never leaves a stale lock behind; the ``.lock`` file itself stays (it holds the
pid of the last writer, for the message a refused writer prints).
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class FileLocked(RuntimeError):
    """Another process is writing the file."""


@contextmanager
def exclusive(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Hold the write lock of ``path`` for the block; :class:`FileLocked` if another process holds it."""
    target = Path(path)
    lock_path = target.with_name(target.name + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
            raise FileLocked(
                f"another trio-vlm process (pid {holder}) is writing {target}; wait for it to finish or write "
                "to another file/folder"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield target
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
