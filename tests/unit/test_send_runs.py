"""The running sender's tickets (services/send_runs.py): a wake-up ends without a claim of its own only once a
short claim of the running sender came back that a barrier begun after its ticket preceded."""

from __future__ import annotations

import dataclasses
import threading
import time

from mailer.config import Settings
from mailer.services import send_results, send_runs


def asking(runner: send_runs.Runner, wait_s: float) -> tuple[threading.Thread, list[str]]:
    answer: list[str] = []
    thread = threading.Thread(target=lambda: answer.append(runner.ask(wait_s)))
    thread.start()
    return thread, answer


def wait_for_ticket(runner: send_runs.Runner, tickets: int) -> None:
    deadline = time.monotonic() + 5
    while runner.claim_begins()[0] < tickets:
        assert time.monotonic() < deadline, "the ticket was never asked"
        time.sleep(0.001)


def test_no_running_sender_means_no_ticket():
    runner = send_runs.Runner()
    assert not runner.keeping_up()
    assert runner.ask(5) == send_runs.ENDED
    assert runner.claim_begins() == (0, False)


def test_a_ticket_is_taken_by_a_short_claim_that_began_after_it_not_by_one_before():
    runner, owner = send_runs.Runner(), object()
    assert runner.lead(owner) and not runner.lead(object())
    earlier, tickets_open = runner.claim_begins()  # a claim under way when the ticket is taken
    assert not tickets_open  # no barrier before it
    thread, answer = asking(runner, 5)
    wait_for_ticket(runner, 1)
    runner.claimed(earlier, short=True)
    thread.join(0.1)
    assert thread.is_alive()  # no barrier after the ticket preceded that claim
    assert runner.finish(owner, earlier) is False  # a ticket is open: the running sender must claim again
    later, tickets_open = runner.claim_begins()
    assert tickets_open  # its barrier first
    runner.claimed(later, short=True)
    thread.join(5)
    assert answer == [send_runs.TAKEN]
    assert runner.finish(owner, later) is True
    assert not runner.keeping_up()


def test_a_full_claim_takes_no_ticket_and_sends_the_asker_to_claim_itself():
    runner, owner = send_runs.Runner(), object()
    runner.lead(owner)
    thread, answer = asking(runner, 5)
    wait_for_ticket(runner, 1)
    runner.claimed(runner.claim_begins()[0], short=False)  # at a limit: more may be due than it took
    thread.join(5)
    assert answer == [send_runs.FULL]
    assert not runner.keeping_up()
    assert runner.ask(5) == send_runs.FULL  # nor does a later asker wait for it


def test_the_asker_claims_itself_when_the_running_sender_ends_or_is_slow():
    runner, owner = send_runs.Runner(), object()
    runner.lead(owner)
    thread, answer = asking(runner, 5)
    wait_for_ticket(runner, 1)
    assert runner.finish(owner, None) is True  # ended (its time was up, or it failed)
    thread.join(5)
    assert answer == [send_runs.ENDED]
    runner.lead(owner)
    started = time.monotonic()
    assert runner.ask(0.05) == send_runs.TIMEOUT  # no claim within the wait
    assert 0.04 < time.monotonic() - started < 2


def test_a_claim_reads_the_tickets_it_covers_before_its_barrier(monkeypatch):
    # A ticket read after the barrier could belong to a wake-up that requests counted on once the barrier had
    # passed: the claim would then cover it without seeing their email (left to the recovery sweep).
    order: list[str] = []
    runner, owner = send_runs.Runner(), object()
    runner.lead(owner)
    real_begins = runner.claim_begins

    def begins() -> tuple[int, bool]:
        order.append("tickets")
        return real_begins()

    outcomes = iter([send_results.BatchOutcome(claimed=3, sent=3), send_results.BatchOutcome(claimed=2, sent=2),
                     send_results.BatchOutcome()])

    def claim(*args: object, **kwargs: object) -> send_results.BatchOutcome:
        order.append("claim")
        if order.count("claim") == 1:  # a wake-up asks while the running sender's first claim is under way
            threading.Thread(target=runner.ask, args=(5,), daemon=True).start()
            deadline = time.monotonic() + 5
            while real_begins()[0] < 1:  # not the spy: this read is the test's, not the sender's
                assert time.monotonic() < deadline, "the ticket was never asked"
                time.sleep(0.001)
        return next(outcomes)

    monkeypatch.setattr(runner, "claim_begins", begins)
    monkeypatch.setattr(send_runs.wakeups, "await_wakers", lambda pool: order.append("barrier"))
    monkeypatch.setattr(send_runs.sending, "send_due_batch", claim)
    settings = dataclasses.replace(Settings(), send_linger_ms=0, send_run_max_s=10)
    assert send_runs._run(None, None, settings, 20, runner, owner) is True  # type: ignore[arg-type]
    assert order == ["tickets", "claim", "tickets", "barrier", "claim", "tickets", "claim"], order
    for at, step in enumerate(order):
        if step == "barrier":
            assert order[at - 1] == "tickets", order  # what this claim covers is fixed before the barrier


def test_a_ticket_is_settled_once_the_claim_committed_not_after_its_mailjet_call(monkeypatch):
    # With Mailjet slow (a call of seconds), a wake-up must not wait for the running sender's call and record too.
    runner, owner = send_runs.Runner(), object()
    runner.lead(owner)
    asked: list[str] = []
    answered = threading.Event()
    claims = 0

    def claim(*args: object, on_claimed=None, **kwargs: object) -> send_results.BatchOutcome:
        nonlocal claims
        claims += 1
        more = False
        if on_claimed is not None:
            on_claimed(more)  # the claim committed: short
        if claims == 1:  # during the first call a wake-up asks
            threading.Thread(target=lambda: (asked.append(runner.ask(5)), answered.set()), daemon=True).start()
            deadline = time.monotonic() + 5
            while runner.claim_begins()[0] < 1:
                assert time.monotonic() < deadline, "the ticket was never asked"
                time.sleep(0.001)
        if claims == 2:  # the claim after the barrier, which covers the ticket: its "call" lasts until answered
            assert answered.wait(5), "the ticket waited for the call to end"
        return send_results.BatchOutcome(claimed=0 if claims >= 3 else 1, sent=0 if claims >= 3 else 1, more=more)

    monkeypatch.setattr(send_runs.wakeups, "await_wakers", lambda pool: None)
    monkeypatch.setattr(send_runs.sending, "send_due_batch", claim)
    settings = dataclasses.replace(Settings(), send_linger_ms=0, send_run_max_s=10)
    assert send_runs._run(None, None, settings, 20, runner, owner) is True  # type: ignore[arg-type]
    assert asked == [send_runs.TAKEN]
