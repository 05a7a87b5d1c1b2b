"""Large received frames into memory that is already mapped.

libzmq receives every message into a fresh ``malloc``; glibc serves a 64 MiB request with a
new ``mmap`` and unmaps it on ``free``, so each hop first-touches 16,384 new pages, and the
page faults cost more than the socket. Told to keep what it frees in one heap, glibc hands
the next frame the pages the last one used: the effect of receiving into a reused buffer
(pyzmq's ``recv_into``) without giving up zero-copy multipart receives. The price is that
a process keeps its peak of tensor memory mapped, which is what a worker wants.
"""

from __future__ import annotations

import ctypes
import logging
import sys

log = logging.getLogger("interop.transport")

# glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_MAX = -4
M_ARENA_MAX = -8


def keep_freed_memory(top_pad: int = 128 << 20) -> bool:
    """Make glibc reuse freed pages for large blocks. Call it before any thread starts (a
    ZeroMQ context starts I/O threads): one arena, so that the I/O thread's frames and the
    main thread's frees meet. Returns False where it does not apply (not glibc)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
    settings = ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, (1 << 31) - 1),
                (M_TOP_PAD, top_pad))
    ok = all(mallopt(param, value) == 1 for param, value in settings)
    if not ok:
        log.warning("glibc refused a mallopt setting: large frames may page-fault per hop")
    return ok
