"""The lookups before a resend: several at a time, each after the throttle; rows matched to stored recipients."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

from mailer.mailjet import send as mailjet
from mailer.services import lookups
from mailer.store.jobs import ClaimedJob


def _job(message: dict | None = None) -> ClaimedJob:
    return ClaimedJob(id=uuid.uuid4(), app_id=1, priority="transactional", message=message or {}, attempts=1,
                      verify_before_send=True, test=False)


class _SlowClient:
    """find_by_custom_id takes `delay_s`, counts the calls in flight at once, fails for `failing` job ids."""

    def __init__(self, delay_s: float, failing: frozenset[str] = frozenset()) -> None:
        self.delay_s, self.failing = delay_s, failing
        self.lock = threading.Lock()
        self.in_flight = self.most_in_flight = 0
        self.asked: list[str] = []

    def find_by_custom_id(self, custom_id: str) -> list[mailjet.FoundRecipient]:
        with self.lock:
            self.asked.append(custom_id)
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        time.sleep(self.delay_s)
        with self.lock:
            self.in_flight -= 1
        if custom_id in self.failing:
            raise mailjet.SendError("Mailjet 503", transient=True, ambiguous=False, status_code=503)
        return [mailjet.FoundRecipient("a@example.com", 2**60, None)]


def test_lookups_run_several_at_a_time_but_no_more_than_the_concurrency() -> None:
    jobs = [_job() for _ in range(20)]
    client = _SlowClient(0.2)

    started = time.monotonic()
    checked = lookups.look_up(client, jobs, lambda: True, concurrency=5)  # type: ignore[arg-type]
    elapsed = time.monotonic() - started

    assert [lookup.job for lookup in checked] == jobs  # in the claim's order
    assert all(lookup.asked and lookup.found and lookup.error is None for lookup in checked)
    assert client.most_in_flight == 5
    assert elapsed < 0.5 * 20 * 0.2  # 4 rounds of 0.2 s, not 20 one after the other


def test_each_lookup_waits_for_the_throttle_and_none_starts_without_it() -> None:
    jobs = [_job() for _ in range(6)]
    client = _SlowClient(0.05, failing=frozenset({str(jobs[1].id)}))
    allowed = iter([True, True, False, True, False, True])
    throttled: list[int] = []

    def throttle() -> bool:
        with client.lock:
            throttled.append(len(client.asked))  # lookups started before this throttle answered
        return next(allowed)

    checked = lookups.look_up(client, jobs, throttle, concurrency=3)  # type: ignore[arg-type]

    assert [lookup.asked for lookup in checked] == [True, True, False, True, False, True]
    assert sorted(client.asked) == sorted(str(job.id) for job in (jobs[0], jobs[1], jobs[3], jobs[5]))
    assert len(throttled) == 6  # once per job, one after the other
    assert isinstance(checked[1].error, mailjet.SendError)
    assert checked[1].found == ()
    assert checked[2].found == () and checked[2].error is None


def test_no_job_no_thread() -> None:
    assert lookups.look_up(_SlowClient(0), [], lambda: True, concurrency=10) == []  # type: ignore[arg-type]


def _row(email: str, message_id: int) -> mailjet.FoundRecipient:
    return mailjet.FoundRecipient(email, message_id, f"uuid-{message_id}")


def _to(*emails: str) -> list[dict[str, Any]]:
    return [{"email": email, "name": None} for email in emails]


def test_rows_go_to_the_recipients_of_their_address_case_insensitively() -> None:
    message = {"to": _to("ann@example.org", "Bob@Example.org"), "cc": _to("cy@example.org")}
    found = [_row("cy@example.org", 12), _row("bob@example.org", 11), _row("ANN@example.org", 10)]

    matched = lookups.match(message, found, suppressed=())

    assert [(r.kind, r.position, r.message_id, r.message_uuid) for r in matched.recipients] == [
        ("to", 0, 10, "uuid-10"), ("to", 1, 11, "uuid-11"), ("cc", 0, 12, "uuid-12")]
    assert matched.recipients[1].email == "Bob@Example.org"  # the stored address
    assert matched.unmatched == ()


def test_an_address_listed_twice_gets_both_rows_in_order() -> None:
    message = {"to": _to("ann@example.org"), "cc": _to("bob@example.org"), "bcc": _to("ANN@example.org")}
    found = [_row("ann@example.org", 30), _row("bob@example.org", 21), _row("ann@example.org", 20)]

    matched = lookups.match(message, found, suppressed=())

    assert [(r.kind, r.position, r.message_id) for r in matched.recipients] == [
        ("to", 0, 20), ("cc", 0, 21), ("bcc", 0, 30)]


def test_missing_rows_leave_recipients_unmatched_and_suppressed_ones_are_served_last() -> None:
    message = {"to": _to("ann@example.org", "bob@example.org"), "cc": _to("ann@example.org")}
    # Ann's To copy is suppressed now: the one row of her address goes to her Cc copy; Bob has no row yet.
    matched = lookups.match(message, [_row("ann@example.org", 5)], suppressed={("to", 0)})

    assert [(r.kind, r.position, r.message_id) for r in matched.recipients] == [("cc", 0, 5)]
    assert matched.unmatched == (("to", 1), ("to", 0))
    # A row with an address nobody has, or none shown, matches nobody.
    assert lookups.match(message, [_row("", 1), _row("zed@example.org", 2)], ()).recipients == ()
