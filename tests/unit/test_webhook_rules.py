"""Webhook signing, secrets, retry delays and the SSRF address rules (no database, no network but DNS of localhost)."""

from __future__ import annotations

import base64
import dataclasses
import ipaddress
import pathlib
import random
import socket
import threading
import time

import pytest

from mailer.config import ConfigError, Settings
from mailer.domain import statuses
from mailer.domain import webhooks as rules
from mailer.domain.webhooks import comparable_url
from mailer.services import ssrf, webhook_delivery, webhooks
from tests.webhook_receiver import SignatureInvalid, verify

# The test vector of the Standard Webhooks reference libraries.
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY = "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def headers(signature: str, msg_id: str = SPEC_ID, timestamp: int = SPEC_TIMESTAMP) -> dict[str, str]:
    return {"webhook-id": msg_id, "webhook-timestamp": str(timestamp), "webhook-signature": signature}


def test_the_test_verifier_accepts_the_spec_vector_and_nothing_else():
    assert verify(SPEC_SECRET, headers(SPEC_SIGNATURE), SPEC_BODY, now=SPEC_TIMESTAMP) == {"test": 2432232314}
    for bad in (SPEC_SIGNATURE[:-2] + "A=", "v2," + SPEC_SIGNATURE[3:], ""):
        with pytest.raises(SignatureInvalid):
            verify(SPEC_SECRET, headers(bad), SPEC_BODY, now=SPEC_TIMESTAMP)
    with pytest.raises(SignatureInvalid):
        verify(SPEC_SECRET, headers(SPEC_SIGNATURE), SPEC_BODY, now=SPEC_TIMESTAMP + 301)


def test_mailer_signs_the_spec_vector_exactly():
    assert webhooks.sign(SPEC_SECRET, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY) == SPEC_SIGNATURE


def test_two_live_secrets_give_two_space_separated_signatures_each_valid():
    old, new = webhooks.new_secret(), webhooks.new_secret()
    header = webhooks.signature_header([new, old], "msg_1", SPEC_TIMESTAMP, b"{}")
    assert len(header.split(" ")) == 2
    for secret in (new, old):
        verify(secret, headers(header, "msg_1"), b"{}", now=SPEC_TIMESTAMP)
    with pytest.raises(SignatureInvalid):
        verify(webhooks.new_secret(), headers(header, "msg_1"), b"{}", now=SPEC_TIMESTAMP)


def test_a_new_secret_is_whsec_and_32_random_bytes():
    secret = webhooks.new_secret()
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) == 32
    assert secret != webhooks.new_secret()


def test_the_event_names_are_the_recipient_statuses_but_pending():
    assert set(rules.EVENT_NAMES) == set(statuses.RECIPIENT_STATUS_RANK) - {"pending"}


def test_retry_delays_follow_the_schedule_with_jitter_and_run_out():
    settings = dataclasses.replace(Settings(), webhook_retry_schedule=(5, 300, 1800))
    rng = random.Random(7)  # noqa: S311  # repeatable jitter, not a secret
    for attempts, base in ((1, 5), (2, 300), (3, 1800)):
        delays = [webhook_delivery.retry_delay(attempts, settings, rng) for _ in range(200)]
        assert all(base * 0.8 <= delay <= base * 1.2 for delay in delays)  # type: ignore[operator]
        assert len(set(delays)) > 1  # jittered, not fixed
    assert webhook_delivery.retry_delay(4, settings, rng) is None


def test_webhook_settings_come_from_the_environment():
    read = Settings.from_env({"MAILER_WEBHOOK_TIMEOUT_S": "2.5", "MAILER_WEBHOOK_CONCURRENCY": "4",
                              "MAILER_WEBHOOK_DISABLE_AFTER_S": "60", "MAILER_WEBHOOK_RETRY_SCHEDULE": "1,2"})
    assert (read.webhook_timeout_s, read.webhook_concurrency, read.webhook_disable_after_s) == (2.5, 4, 60)
    assert read.webhook_retry_schedule == (1, 2)
    assert webhook_delivery.per_endpoint_limit(read) == 1
    with pytest.raises(ConfigError, match="MAILER_WEBHOOK_TIMEOUT_S"):
        Settings.from_env({"MAILER_WEBHOOK_TIMEOUT_S": "0"})
    with pytest.raises(ConfigError, match="MAILER_WEBHOOK_CONCURRENCY"):
        Settings.from_env({"MAILER_WEBHOOK_CONCURRENCY": "0"})


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1", "127.8.9.10", "10.0.0.1", "172.16.5.4", "192.168.1.1", "169.254.169.254", "169.254.1.1",
        "0.0.0.0",  # noqa: S104  # an address to refuse, nothing binds it
        "224.0.0.1", "240.0.0.1", "255.255.255.255", "100.64.0.1", "100.100.100.200",
        "::1", "::", "fe80::1", "fc00::1", "fd00:ec2::254", "ff02::1",
        "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:169.254.169.254",  # IPv4-mapped
        "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
        "2002:7f00:1::",  # 6to4 of 127.0.0.1
    ],
)
def test_private_and_special_addresses_are_refused(address):
    assert ssrf.forbidden_reason(ipaddress.ip_address(address), allow_private=False) is not None


@pytest.mark.parametrize("address", ["93.184.215.14", "8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses_pass(address):
    assert ssrf.forbidden_reason(ipaddress.ip_address(address), allow_private=False) is None


def test_allow_private_lets_loopback_through_but_never_cloud_metadata():
    assert ssrf.forbidden_reason(ipaddress.ip_address("127.0.0.1"), allow_private=True) is None
    assert ssrf.forbidden_reason(ipaddress.ip_address("10.1.2.3"), allow_private=True) is None
    for metadata in ("169.254.169.254", "::ffff:169.254.169.254", "fd00:ec2::254", "168.63.129.16"):
        assert "metadata" in str(ssrf.forbidden_reason(ipaddress.ip_address(metadata), allow_private=True))


@pytest.mark.parametrize(
    "url",
    ["ftp://example.com/", "file:///etc/passwd", "gopher://x/", "http:///nohost", "http://exa mple.com/",
     "http://example.com:99999/", "https://example.com/\r\nX: y", "example.com/hook", "http://" + "a" * 2050],
)
def test_malformed_urls_are_refused(url):
    with pytest.raises(ssrf.UnsafeURL):
        ssrf.parse(url)


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1/", "http://localhost:8080/hook", "http://[::1]/", "http://2130706433/", "http://0x7f.1/",
     "http://[::ffff:127.0.0.1]/", "https://169.254.169.254/latest/meta-data/"],
)
def test_urls_reaching_loopback_or_metadata_are_refused(url):
    with pytest.raises(ssrf.UnsafeURL, match="forbidden address"):
        ssrf.check_url(url, allow_private=False, timeout_s=2)


def test_a_public_ip_literal_url_passes():
    target, addresses = ssrf.check_url("https://93.184.215.14/hooks?x=1", allow_private=False, timeout_s=2)
    assert (target.host, target.port) == ("93.184.215.14", 443)
    assert [str(address) for address in addresses] == ["93.184.215.14"]


@pytest.mark.parametrize("url", ["https://93.184.215.14:8443/", "http://93.184.215.14:22/", "http://93.184.215.14:6379/"])
def test_only_ports_80_and_443_unless_private_addresses_are_allowed(url):
    with pytest.raises(ssrf.UnsafeURL, match="port 80 or 443"):
        ssrf.check_url(url, allow_private=False, timeout_s=2)
    assert ssrf.check_url(url, allow_private=True, timeout_s=2)[0].port == int(url.rsplit(":", 1)[1].strip("/"))
    for allowed in ("http://93.184.215.14:80/", "https://93.184.215.14:443/", "https://93.184.215.14/"):
        ssrf.check_url(allowed, allow_private=False, timeout_s=2)


def test_a_name_lookup_that_hangs_is_given_up_after_the_timeout(monkeypatch):
    release = threading.Event()

    def hanging(*args, **kwargs):
        release.wait(10)
        raise OSError("gave up")

    monkeypatch.setattr(socket, "getaddrinfo", hanging)
    started = time.monotonic()
    try:
        with pytest.raises(ssrf.UnsafeURL, match=r"did not resolve within 0\.2 s"):
            ssrf.check_url("https://hangs.example/", allow_private=False, timeout_s=0.2)
        assert time.monotonic() - started < 2
    finally:
        release.set()


def test_the_readme_guide_for_subscribers_verifies_a_mailer_webhook():
    readme = (pathlib.Path(__file__).resolve().parents[2] / "README.md").read_text()
    guide = readme.split("#### For subscribers: verifying a webhook", 1)[1]
    code = guide.split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict = {}
    exec(code, namespace)  # noqa: S102  # the guide's own code, run as a subscriber would
    secret, body, now = webhooks.new_secret(), b'{"type": "email.sent"}', int(time.time())
    signed = headers(webhooks.signature_header([secret], "msg_1", now, body), "msg_1", now)

    assert namespace["verify_webhook"](secret, signed, body) == {"type": "email.sent"}
    with pytest.raises(ValueError, match="signature"):
        namespace["verify_webhook"](webhooks.new_secret(), signed, body)
    with pytest.raises(ValueError, match="signature"):
        namespace["verify_webhook"](secret, signed, body + b" ")
    with pytest.raises(ValueError, match="timestamp"):
        namespace["verify_webhook"](secret, headers(signed["webhook-signature"], "msg_1", now - 600), body)


@pytest.mark.parametrize(("url", "comparable"), [
    ("HTTPS://Hooks.Example.COM:443/x?", "https://hooks.example.com/x"),
    ("https://hooks.example.com", "https://hooks.example.com/"),
    ("http://a.example:80/p#", "http://a.example/p"),
    ("https://a.example:8443/P?q=1", "https://a.example:8443/P?q=1"),
    ("http://[2001:DB8::1]:80/x", "http://[2001:db8::1]/x"),
    ("https://a.example:99999/", "https://a.example:99999/"),  # does not parse: itself
])
def test_comparable_url(url, comparable):
    assert comparable_url(url) == comparable


def test_lookups_never_queue_for_a_resolver_thread(monkeypatch):
    release = threading.Event()
    real = socket.getaddrinfo

    def hanging(host, *args, **kwargs):
        if host.endswith("hang.example"):
            release.wait(10)
            raise OSError("gave up")
        return real("127.0.0.1", *args[:1], **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", hanging)
    try:
        for owner in ("a", "b"):  # two threads, a share of one each
            with pytest.raises(ssrf.Unresolvable):
                ssrf.resolve("x.hang.example", 443, 0.05, owner, threads=2)
        started = time.monotonic()
        with pytest.raises(ssrf.ResolverBusy, match="all 2 resolver threads are busy"):
            ssrf.resolve("fine.example", 443, 1.0, "c", threads=2)
        with pytest.raises(ssrf.ResolverBusy, match="lookups in progress"):
            ssrf.resolve("fine.example", 443, 1.0, "a", threads=4)  # a free thread, but not a's share
        assert time.monotonic() - started < 0.5  # refused at once, not after waiting for a thread
        assert ssrf.resolve("fine.example", 443, 1.0, "c", threads=4) == [ipaddress.ip_address("127.0.0.1")]
        assert ssrf.resolve("93.184.215.14", 443, 1.0, "a", threads=2)  # a literal needs no thread
    finally:
        release.set()
    deadline = time.monotonic() + 5
    while ssrf._resolving and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not ssrf._resolving  # every thread given back
