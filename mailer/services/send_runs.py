"""A wake-up's run of the sender (services/sending.py), and the process's running sender that later wake-ups hand
their last claim to while mail trickles in: one sender filling its batches instead of many sending a few each.

A wake-up ends once a claim made after its barrier (services/wakeups.py: await_wakers) comes back short, so that
every request that counted on it is seen (sql/migrations/0015). While mail trickles in, a worker that ends a
wake-up fetches the next at once, and every sender of the process claims the few emails that came meanwhile:
a claim, a Mailjet call and a record for two or three emails each. So one wake-up per process becomes its
running sender: it keeps claiming (no sooner than MAILER_SEND_LINGER_MS after its last claim began, when that
one came back short but not empty) for up to MAILER_SEND_RUN_MAX_S. A wake-up fetched meanwhile takes a ticket
and waits for a short claim of the running sender that a barrier passed after the ticket precedes: that
barrier waited for every request that counted on the wake-up (it began after the wake-up was fetched), so the
claim sees them all, and the wake-up ends with neither a claim nor a barrier of its own (one barrier serves
every ticket open at once). It waits at most MAILER_SEND_HANDOFF_WAIT_MS, and sends itself when the running
sender stops keeping up (a full claim), ends or fails meanwhile. A claim settles its tickets once it committed,
before its Mailjet call. The running sender ends after its own
barrier, at a claim that found nothing, unless a ticket was taken after that claim began: it claims again.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import weakref

import psycopg_pool

from mailer import db, metrics
from mailer.config import Settings
from mailer.mailjet import send as mailjet
from mailer.services import sending, wakeups

log = logging.getLogger(__name__)
# A failed wake-up's successor waits this long (send_for_wakeup).
FAILED_WAKEUP_DELAY_S = 2.0


# What a wake-up's ticket came to (the label of mailer_send_handoffs).
TAKEN, FULL, ENDED, TIMEOUT = "taken", "full", "ended", "timeout"


class Runner:
    """A process's running sender (for one pool): who it is, whether its claims keep up, and the tickets."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._owner: object | None = None
        self._keeping_up = False  # its last claim came back short: each claims everything due
        self._asked = 0  # tickets handed out so far
        self._covered = 0  # every ticket up to this one saw a short claim begin after it

    def lead(self, owner: object) -> bool:
        """Become the running sender, unless there is one."""
        with self._changed:
            if self._owner is not None:
                return False
            self._owner, self._keeping_up = owner, True
            return True

    def keeping_up(self) -> bool:
        """Whether a running sender is there to ask, its last claim short (or none made yet)."""
        with self._changed:
            return self._owner is not None and self._keeping_up

    def ask(self, wait_s: float) -> str:
        """A ticket's outcome: TAKEN once a short claim of the running sender came back that a barrier begun after
        the ticket preceded; FULL or ENDED, at once or while waiting, when the running sender stops keeping up or
        is gone; TIMEOUT after `wait_s`. Anything but TAKEN: the asker claims itself."""
        deadline = time.monotonic() + wait_s
        with self._changed:
            owner = self._owner
            if owner is None:
                return ENDED
            if not self._keeping_up:
                return FULL
            self._asked += 1
            ticket = self._asked
            while self._covered < ticket:
                if self._owner is not owner:
                    return ENDED
                if not self._keeping_up:
                    return FULL
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return TIMEOUT
                self._changed.wait(remaining)
            return TAKEN

    def claim_begins(self) -> tuple[int, bool]:
        """The tickets a claim about to begin covers if it comes back short, and whether any of them is open
        (a barrier must then come first)."""
        with self._changed:
            return self._asked, self._asked > self._covered

    def claimed(self, covers: int, short: bool) -> None:
        """A claim of the running sender came back: short (it covers its tickets) or full."""
        with self._changed:
            self._keeping_up = short
            if short:
                self._covered = max(self._covered, covers)
            self._changed.notify_all()

    def finish(self, owner: object, covered: int | None) -> bool:
        """Stop being the running sender: with `covered` (the tickets of its last claim), only if no ticket came
        after them (False: claim again); with None, at once."""
        with self._changed:
            if self._owner is not owner:
                return True
            if covered is not None and self._asked > covered:
                return False
            self._owner = None
            self._changed.notify_all()
            return True


# Set when the worker stops: a running sender ends at its next short claim (Procrastinate waits for it to end).
_STOPPING = threading.Event()


def wind_down() -> None:
    """The worker is stopping: running senders end at their next short claim instead of claiming on."""
    _STOPPING.set()


_RUNNERS: weakref.WeakKeyDictionary[psycopg_pool.ConnectionPool, Runner] = weakref.WeakKeyDictionary()
_RUNNERS_LOCK = threading.Lock()


def runner(pool: psycopg_pool.ConnectionPool) -> Runner:
    """The running sender of the claims made through `pool` (this process's)."""
    with _RUNNERS_LOCK:
        found = _RUNNERS.get(pool)
        if found is None:
            found = _RUNNERS[pool] = Runner()
        return found


def send_for_wakeup(
    pool: psycopg_pool.ConnectionPool,
    client: mailjet.MailjetClient,
    settings: Settings,
    lane: int,
    max_full_batches: int,
) -> None:
    """One wake-up of `lane`: hand its last claim to the running sender, or be it, or send batches until a claim
    after its barrier comes back short; hand over to a fresh wake-up after `max_full_batches` full ones."""
    try:
        if _send(pool, client, settings, max_full_batches):
            return
    except Exception:
        # Requests may have counted on this wake-up (sql/migrations/0015): leave one for them, a little later
        # so that an error that repeats cannot spin the workers (and no request counts on a scheduled one).
        with contextlib.suppress(Exception):
            _hand_over(pool, lane, settings.send_batch_size, delay_s=FAILED_WAKEUP_DELAY_S)
        raise
    # The cap, with full batches all along: more may be due, and requests may still count on this wake-up.
    _hand_over(pool, lane, settings.send_batch_size)


def _send(pool: psycopg_pool.ConnectionPool, client: mailjet.MailjetClient, settings: Settings,
          max_full_batches: int) -> bool:
    """Whether the wake-up is done (False: it reached the cap of full batches)."""
    if settings.send_run_max_s <= 0:
        return _send_alone(pool, client, settings, max_full_batches)
    running = runner(pool)
    if settings.send_handoff_wait_ms > 0 and running.keeping_up():
        outcome = running.ask(settings.send_handoff_wait_ms / 1000)
        metrics.send_handoff(outcome)
        if outcome == TAKEN:
            return True
        if outcome == TIMEOUT:
            # Full or ended are the running sender's normal course; no claim within the wait means its cycle (a
            # Mailjet call, the shared cap, a record's retries) is slow: each wake-up then waits before sending.
            log.warning("the running sender did not claim for this wake-up within MAILER_SEND_HANDOFF_WAIT_MS "
                        "(%d ms); claiming itself", settings.send_handoff_wait_ms)
    owner = object()
    if not running.lead(owner):
        return _send_alone(pool, client, settings, max_full_batches)
    try:
        return _run(pool, client, settings, max_full_batches, running, owner)
    finally:
        running.finish(owner, None)


def _send_alone(pool: psycopg_pool.ConnectionPool, client: mailjet.MailjetClient, settings: Settings,
                max_full_batches: int) -> bool:
    """Send batches until a claim after the barrier comes back short (True), or the cap of full ones (False)."""
    full_batches, awaited = 0, False
    while full_batches < max_full_batches:
        if sending.send_due_batch(pool, client, settings).more:
            full_batches += 1
        elif awaited:
            return True
        else:
            # Requests that saw this wake-up waiting deferred none of their own: let them end, claim again.
            wakeups.await_wakers(pool)
            awaited = True
    return False


def _run(pool: psycopg_pool.ConnectionPool, client: mailjet.MailjetClient, settings: Settings,
         max_full_batches: int, running: Runner, owner: object) -> bool:
    """The running sender: claim while claims find mail, for up to MAILER_SEND_RUN_MAX_S, serving tickets."""
    started = time.monotonic()
    linger_s = settings.send_linger_ms / 1000
    full_batches, short_before, awaited = 0, False, False
    linger_from: float | None = None
    while True:
        if linger_from is not None:
            # The last claim came back short but not empty: mail trickles in; let more come before the next.
            time.sleep(max(0.0, linger_from + linger_s - time.monotonic()))
        covers, tickets_open = running.claim_begins()
        if tickets_open or (short_before and not awaited):
            # Requests that counted on this wake-up (once a claim of it came back short), or on those of the
            # tickets, deferred none of their own: let them end, then claim.
            wakeups.await_wakers(pool)
            awaited = awaited or short_before
        claim_began = time.monotonic()
        told: list[bool] = []

        def tell(more: bool, covers: int = covers, told: list[bool] = told) -> None:
            # Once the claim committed, what it covers is settled: its tickets end before its Mailjet call.
            told.append(more)
            running.claimed(covers, short=not more)

        outcome = sending.send_due_batch(pool, client, settings, on_claimed=tell)
        if not told:  # no claim committed (it raced): as a full one, the tickets send themselves
            running.claimed(covers, short=not outcome.more)
        linger_from = None
        if outcome.more:
            full_batches += 1
            if full_batches >= max_full_batches:
                return False
            continue
        short_before = True
        if not awaited:
            continue  # the barrier, then a claim
        if time.monotonic() - started >= settings.send_run_max_s or _STOPPING.is_set():
            return True  # the tickets still open find it gone, and send themselves
        if outcome.claimed:
            linger_from = claim_began
        elif running.finish(owner, covers):
            return True


def _hand_over(pool: psycopg_pool.ConnectionPool, lane: int, batch_size: int, delay_s: float = 0.0) -> None:
    """Leave a fresh wake-up of `lane`, due in `delay_s`; whoever runs it waits for the requests first."""
    with db.connection(pool) as conn:
        wakeups.wake_lane(conn, lane, batch_size, delay_s)
