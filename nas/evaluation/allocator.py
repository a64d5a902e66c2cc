"""Keep freed memory in the process (glibc ``mallopt``): a training step frees and allocates
the same multi-megabyte activation buffers every step; glibc's defaults hand them back to the
kernel and page-fault them in again on the next step, so a step spends much of its time in
page faults instead of arithmetic (docs/lab-log.md, "Keeping freed memory"). Equivalent to
starting Python with
``MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=536870912 MALLOC_TOP_PAD_=67108864``.
Set ``NAS_MALLOC_TUNING=0`` to keep the C library's defaults; other C libraries are left alone.
"""

from __future__ import annotations

import ctypes
import os
import sys

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3  # glibc's malloc.h
_MMAP_THRESHOLD = 32 << 20  # glibc's maximum: buffers up to 32 MB come from the heap
_TRIM_THRESHOLD = 512 << 20  # keep up to 512 MB of freed heap mapped
_TOP_PAD = 64 << 20

_done: bool | None = None


def keep_freed_memory() -> bool:
    """Apply the settings once per process; returns whether they are in effect."""
    global _done
    if _done is not None:
        return _done
    _done = False
    if not sys.platform.startswith("linux") or os.environ.get("NAS_MALLOC_TUNING", "1") == "0":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl)
        return False
    _done = bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)
                 and mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)
                 and mallopt(_M_TOP_PAD, _TOP_PAD))
    return _done
