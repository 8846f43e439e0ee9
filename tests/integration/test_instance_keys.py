"""Keys made once per installation and shared by every process."""

from __future__ import annotations

import threading

import psycopg

from mailer.services import instance_keys


def test_the_first_ask_makes_the_key_and_later_asks_get_the_same(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        first = instance_keys.instance_key(conn, "session")
        again = instance_keys.instance_key(conn, "session")
        other = instance_keys.instance_key(conn, "webhook-secrets")
    assert len(first) == instance_keys.KEY_BYTES
    assert again == first
    assert other != first


def test_processes_asking_at_once_all_get_one_key(database_url: str) -> None:
    keys: list[bytes] = []
    start = threading.Barrier(6)

    def ask() -> None:
        with psycopg.connect(database_url, autocommit=True) as conn:
            start.wait()
            keys.append(instance_keys.instance_key(conn, "session"))

    threads = [threading.Thread(target=ask) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(keys) == 6
    assert len(set(keys)) == 1
