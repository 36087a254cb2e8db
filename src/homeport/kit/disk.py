"""Getting written bytes onto the disk: sync a file or directory, and start the writeback of a
range early so that the sync that must wait finds little left to do."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path

_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")

# sync_file_range(2) flag: start writing the range's dirty pages, do not wait for them.
_SYNC_FILE_RANGE_WRITE = 2


def _sync_file_range() -> Callable[[int, int, int, int], int] | None:
    """Linux's sync_file_range from the C library, or None where there is none."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        function = libc.sync_file_range
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


_SYNC_RANGE = _sync_file_range()


def start_writeback(descriptor: int, offset: int, length: int) -> None:
    """Blocking, but brief: ask the kernel to start writing ``length`` bytes at ``offset`` to
    disk now. An upload's chunks are then mostly on disk by the time the finished file is
    synced (measured here: the sync of a 32 MiB file from 17 ms to 0.2 ms). Nothing to do
    where the system has no such call: the final sync then waits for all of it."""
    if _SYNC_RANGE is not None and length > 0:
        _SYNC_RANGE(descriptor, offset, length, _SYNC_FILE_RANGE_WRITE)  # a hint: result unused


def sync(path: Path, *, data_only: bool = False) -> None:
    """Blocking: ``fsync`` a file, or a directory (its entries: a new or renamed file).
    ``data_only``: ``fdatasync``, a file's bytes and what reading them back needs (its size),
    not its times."""
    # macOS has no fdatasync.
    flush = getattr(os, "fdatasync", os.fsync) if data_only else os.fsync
    descriptor = os.open(path, os.O_RDONLY)
    try:
        flush(descriptor)
    finally:
        os.close(descriptor)


@functools.cache
def boot_id() -> str | None:
    """Which boot of the machine this is (Linux), or None where the system does not say.
    Written bytes not yet synced survive a process crash (they are in the kernel's page
    cache) but not a power loss, which the machine comes back from with a new boot id."""
    try:
        return _BOOT_ID.read_text().strip() or None
    except OSError:
        return None
