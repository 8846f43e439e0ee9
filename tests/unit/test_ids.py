"""Job ids: version 7 UUIDs, their first 48 bits the time they were made."""

from __future__ import annotations

import time
import uuid

from mailer.domain.ids import uuid7


def test_a_job_id_is_an_rfc_version_7_uuid():
    ids = [uuid7() for _ in range(1000)]
    assert {value.version for value in ids} == {7}
    assert {value.variant for value in ids} == {uuid.RFC_4122}
    assert len(set(ids)) == 1000
    assert all(uuid.UUID(str(value)) == value for value in ids)  # as the API spells it, and back


def test_its_leading_bits_are_the_milliseconds_it_was_made():
    before = time.time_ns() // 1_000_000
    value = uuid7()
    after = time.time_ns() // 1_000_000
    assert before <= value.int >> 80 <= after


def test_ids_made_in_later_milliseconds_sort_later():
    earlier = uuid7()
    time.sleep(0.002)
    later = uuid7()
    assert str(earlier) < str(later) and earlier.bytes < later.bytes


def test_the_random_part_varies_in_every_one_of_its_74_bits():
    random_bits = (1 << 80) - 1 & ~(0xF << 76) & ~(0x3 << 62)
    seen = 0
    for _ in range(200):
        seen |= uuid7().int & random_bits
    assert seen == random_bits
