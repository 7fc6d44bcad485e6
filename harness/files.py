"""Reading a file someone else wrote: a regular file, at most a known size, never unbounded.

Every file attestlab reads on a user's or a board's say-so (plans, board configs, reference
profiles, keys, result envelopes, evidence blobs, recorded captures, config-space dumps) goes
through `read_capped`. A path that is a FIFO, a device (`/dev/zero`), a directory or a socket
— also through a symlink — is refused before a byte is read, and a file larger than the limit
is refused instead of filling memory. The refusal is an `OSError` (`FileRefused`) whose
`strerror` says why, so every `except OSError` that reports "cannot read" reports it too.

Only the standard library: every layer may use it.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


class FileRefused(OSError):
    """The path is not a regular file, or is larger than the reader allows."""


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def read_capped(path: str | os.PathLike, limit: int) -> bytes:
    """The bytes of the regular file at `path` (symlinks followed), at most `limit` of them.

    Raises FileRefused for anything but a regular file, or a file longer than `limit` bytes
    (also one that grows while it is read), and OSError when it cannot be opened.
    """
    return _read_regular(Path(path), limit, whole=True)


def read_head(path: str | os.PathLike, size: int) -> bytes:
    """The first `size` bytes of the regular file at `path` (a file may be longer)."""
    return _read_regular(Path(path), size, whole=False)


def _read_regular(path: Path, limit: int, whole: bool) -> bytes:
    # O_NONBLOCK: opening a FIFO with no writer must not hang before fstat can refuse it.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise FileRefused(errno.EINVAL, f"{_kind(st.st_mode)}, not a regular file", str(path))
        if whole and st.st_size > limit:
            raise FileRefused(errno.EFBIG, f"{st.st_size} bytes, more than the {limit} allowed", str(path))
        chunks, total = [], 0
        while True:
            chunk = os.read(fd, min(1 << 20, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:
                if not whole:
                    return b"".join(chunks)[:limit]
                raise FileRefused(errno.EFBIG, f"more than the {limit} bytes allowed (it grew while read)", str(path))
        return b"".join(chunks)
    finally:
        os.close(fd)
