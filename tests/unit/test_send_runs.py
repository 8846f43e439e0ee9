"""The running sender's tickets (services/send_runs.py): a wake-up ends without a claim of its own only once a
short claim of the running sender came back that a barrier begun after its ticket preceded."""

from __future__ import annotations

import threading
import time

from mailer.services import send_runs


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
