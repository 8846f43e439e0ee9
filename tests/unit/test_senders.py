"""Sending domains: one stored form, exact and case-insensitive matching."""

from __future__ import annotations

import pytest

from mailer.domain import senders


@pytest.mark.parametrize(
    ("raw", "stored"),
    [
        ("example.com", "example.com"),
        ("  Mail.Example.COM ", "mail.example.com"),
        ("example.com.", "example.com"),
        ("Bücher.de", "xn--bcher-kva.de"),
        ("xn--bcher-kva.de", "xn--bcher-kva.de"),
        ("a-b.c1.io", "a-b.c1.io"),
    ],
)
def test_normalize_domain(raw: str, stored: str) -> None:
    assert senders.normalize_domain(raw) == stored


@pytest.mark.parametrize(
    "raw", ["", " ", ".", "com", "example..com", "example.com..", "-a.com", "a-.com", "a_b.com", "a b.com",
            "user@example.com", "10.0.0.1", "x" * 64 + ".com", ("a" * 63 + ".") * 4 + "com", "exa\u0000mple.com"],
)
def test_what_is_not_a_domain_name_is_refused(raw: str) -> None:
    with pytest.raises(ValueError, match=r"domain|253|IP"):
        senders.normalize_domain(raw)


def test_normalize_domains_sorts_and_dedupes_and_none_means_any() -> None:
    assert senders.normalize_domains(["b.io", "A.io", "a.IO"]) == ["a.io", "b.io"]
    assert senders.normalize_domains([]) is None


def test_matching_is_exact_and_case_insensitive() -> None:
    allowed = senders.normalize_domains(["example.com", "bücher.de"])
    assert senders.allows(allowed, senders.domain_of("Ann@EXAMPLE.com"))
    assert senders.allows(allowed, senders.domain_of("ann@BÜCHER.de"))
    assert senders.allows(allowed, senders.domain_of('"odd@local"@example.com'))  # the domain is after the last @
    assert not senders.allows(allowed, senders.domain_of("ann@mail.example.com"))  # subdomains are not included
    assert not senders.allows(allowed, senders.domain_of("ann@example.com.evil.io"))
    assert not senders.allows(allowed, senders.domain_of("ann@notexample.com"))
    assert senders.allows(None, senders.domain_of("ann@anything.example"))
