"""Give the memory of big messages back to the system once they are sent (glibc malloc tuning)."""

from __future__ import annotations

import ctypes
import logging

log = logging.getLogger(__name__)

# glibc's mallopt parameter (malloc.h) and the size it starts at by default.
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 128 * 1024
# A claim that read more message bytes than this retires its connection (db.retire).
BIG_CLAIM_BYTES = 1024 * 1024

# Measured with tests/e2e/test_worker_memory.py (12 jobs with 14 MB attachments through the simulator, one
# worker; RSS before, at peak, after): 56, 604, 495 MB with 50 jobs a call. With calls bounded (each 14 MB job
# alone) what stayed was (1) a 14 MB block in each of four thread arenas (112 MB after): glibc serves an
# allocation of 128 KiB or more with an mmap of its own and unmaps it when freed, but freeing one raises that
# threshold to the freed size (up to 32 MiB), so the next body comes from the arenas, which keep what is
# freed; pinning the threshold (a mallopt of it turns the raise off) ends that. (2) 16 MiB per pooled
# connection that had read a body (98-112 MB after): libpq's input buffer never shrinks (db.retire). With
# both: 56, 126, 57 MB. malloc_trim after big sends was tried too and changed nothing measurable.
_libc: ctypes.CDLL | None = None


def _glibc() -> ctypes.CDLL | None:
    global _libc
    if _libc is None:
        try:
            libc = ctypes.CDLL(None)  # the C library the interpreter runs on
        except OSError:
            return None
        if not hasattr(libc, "mallopt"):  # not glibc (musl, macOS)
            return None
        _libc = libc
    return _libc


def pin_mmap_threshold() -> bool:
    """Serve every allocation of 128 KiB or more from its own mmap, for good; whether it took effect."""
    libc = _glibc()
    done = bool(libc and libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
    if not done:
        log.warning("malloc tuning unavailable (not glibc): the memory of big messages may stay with the worker")
    return done


def big_claim(message_bytes: int) -> bool:
    """Whether a claim that read this many message bytes should retire its connection."""
    return message_bytes >= BIG_CLAIM_BYTES
