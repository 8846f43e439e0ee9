"""Exponential backoff with jitter and a cap, for send retries."""

from __future__ import annotations

import random


def retry_delay(
    attempt: int, base_s: float, cap_s: float, retry_after_s: float | None = None, rng: random.Random | None = None
) -> float:
    """Seconds to wait after failed attempt number `attempt` (1-based).

    "Equal jitter": half the exponential step is fixed, half random, so retries spread out
    without ever collapsing to zero. A server's Retry-After is a floor.
    """
    step = min(cap_s, base_s * 2 ** max(attempt - 1, 0))
    delay = step / 2 + (rng or random).uniform(0, step / 2)  # jitter, not crypto
    return max(delay, retry_after_s or 0.0)
