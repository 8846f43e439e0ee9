"""Job ids: UUIDs whose leading bits are the time they were made (RFC 9562, version 7)."""

from __future__ import annotations

import os
import time
import uuid

_VERSION_7 = 0x7 << 76
_VARIANT_RFC = 0x2 << 62
_KEEP = ~(0xF << 76) & ~(0x3 << 62) & ((1 << 128) - 1)


def uuid7() -> uuid.UUID:
    """A fresh version 7 UUID: 48 bits of Unix milliseconds, then 74 random bits.

    New jobs' keys then land at the right edge of every index keyed by job id (jobs, recipients, audit
    trail, addresses) instead of on a random page of each: a handful of hot pages rather than the whole
    index, which matters once a million jobs are kept. (The standard library has uuid7 from 3.14 on.)
    """
    milliseconds = time.time_ns() // 1_000_000
    value = (milliseconds & ((1 << 48) - 1)) << 80 | int.from_bytes(os.urandom(10), "big")
    return uuid.UUID(int=value & _KEEP | _VERSION_7 | _VARIANT_RFC)
