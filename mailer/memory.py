"""Give the memory of big messages back to the system after they are sent (glibc malloc tuning)."""

from __future__ import annotations

import ctypes
import logging

log = logging.getLogger(__name__)

# glibc's mallopt parameter (malloc.h) and the size it normally starts at.
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 128 * 1024
# A send that held more message bytes than this is followed by malloc_trim (a few ms): below it, nothing
# big enough to matter was freed.
TRIM_AFTER_BYTES = 1024 * 1024

# Measured with tests/e2e/test_worker_memory.py (12 jobs with 14 MB attachments through the simulator, one
# worker): RSS 56 MB before, 604 MB at peak, 495 MB after, for good. glibc serves an allocation of 128 KiB or
# more with its own mmap and unmaps it when freed, but freeing one raises that threshold to the freed size
# (up to 32 MiB), so the next body of the same size comes from the heap arenas, which keep freed memory.
# Pinning the threshold (mallopt turns the dynamic raise off) keeps every big string and buffer an mmap of
# its own, given back at once; malloc_trim releases what smaller pieces left free at the top of the arenas.
_libc: ctypes.CDLL | None = None


def _glibc() -> ctypes.CDLL | None:
    global _libc
    if _libc is None:
        try:
            libc = ctypes.CDLL(None)  # the C library the interpreter runs on
        except OSError:
            return None
        if not (hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim")):  # not glibc (musl, macOS)
            return None
        _libc = libc
    return _libc


def pin_mmap_threshold() -> bool:
    """Serve every allocation of 128 KiB or more from its own mmap, for good; whether it took effect."""
    libc = _glibc()
    done = bool(libc and libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
    if not done:
        log.info("malloc tuning unavailable (not glibc): memory of big messages may stay with the process")
    return done


def trim_after(message_bytes: int) -> None:
    """Give free heap memory back to the system after a send that held this many message bytes."""
    libc = _glibc()
    if libc is not None and message_bytes >= TRIM_AFTER_BYTES:
        libc.malloc_trim(0)
