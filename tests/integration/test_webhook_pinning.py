"""Issue 17, delivery: the name is resolved once and the connection made only to a checked address (Host,
SNI and the certificate still the name's), the log's errors do not tell open ports from closed ones, and
deliveries to one host are rate limited (put back, not failed)."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import http.server
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Iterator

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mailer.config import Settings
from mailer.services import ssrf, webhook_delivery, webhook_post
from mailer.store.webhooks import ClaimedDelivery
from tests.integration.webhooks_support import expand, mark_sent, queue, register
from tests.webhook_receiver import Receiver, running_receiver

SECRET = "whsec_" + "A" * 44
_real_getaddrinfo = socket.getaddrinfo


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return dataclasses.replace(settings, webhook_allow_private=True, webhook_timeout_s=3.0, webhook_host_rate_per_s=0)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as running:
        yield running


def delivery_to(url: str) -> ClaimedDelivery:
    return ClaimedDelivery(
        id=1, attempts=0, message_id="msg_x", type="email.sent", body="{}", endpoint_id=None,  # type: ignore[arg-type]
        url=url, secret=SECRET, previous_secret=None,
    )


def public_only(settings: Settings) -> Settings:
    return dataclasses.replace(settings, webhook_allow_private=False)


class FakeDNS:
    """Names that resolve to loopback addresses of the test's choice, answer by answer (DNS rebinding)."""

    def __init__(self, names: dict[str, list[list[str]]]) -> None:
        self.names = names
        self.lookups: list[str] = []

    def getaddrinfo(self, host, port, *args, **kwargs):  # type: ignore[no-untyped-def]
        if host not in self.names:
            return _real_getaddrinfo(host, port, *args, **kwargs)
        self.lookups.append(host)
        answers = self.names[host]
        addresses = answers.pop(0) if len(answers) > 1 else answers[0]
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port)) for address in addresses]


@pytest.fixture
def only_127_0_0_1_is_public(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without MAILER_WEBHOOK_ALLOW_PRIVATE, 127.0.0.1 stands for a public address and every other is private
    (no test may reach out of this machine)."""
    real = ssrf.forbidden_reason

    def reason(address, allow_private):  # type: ignore[no-untyped-def]
        if address == ipaddress.ip_address("127.0.0.1"):
            return None
        return real(address, allow_private)

    monkeypatch.setattr(ssrf, "forbidden_reason", reason)


def test_the_delivery_connects_to_the_address_it_checked_not_a_second_lookup(
    monkeypatch, receiver, settings, only_127_0_0_1_is_public
):
    dns = FakeDNS({"hooks.example": [["127.0.0.1"], ["127.0.0.2"]]})  # the second answer rebinds
    monkeypatch.setattr(socket, "getaddrinfo", dns.getaddrinfo)
    monkeypatch.setattr(ssrf, "ALLOWED_PORTS", (80, 443, receiver.port))

    attempt = webhook_delivery.post(
        delivery_to(f"http://hooks.example:{receiver.port}/ok"), public_only(settings)
    )

    assert (attempt.status_code, attempt.error) == (200, None)
    assert dns.lookups == ["hooks.example"]  # one lookup, the one checked
    [request] = receiver.requests
    assert request.headers["host"] == f"hooks.example:{receiver.port}"  # still the name's request


def test_a_name_with_one_forbidden_address_is_refused_before_any_connection(
    monkeypatch, receiver, settings, only_127_0_0_1_is_public
):
    dns = FakeDNS({"hooks.example": [["127.0.0.1", "127.0.0.9"]]})
    monkeypatch.setattr(socket, "getaddrinfo", dns.getaddrinfo)
    monkeypatch.setattr(ssrf, "ALLOWED_PORTS", (80, 443, receiver.port))

    attempt = webhook_delivery.post(
        delivery_to(f"http://hooks.example:{receiver.port}/ok"), public_only(settings)
    )

    assert (attempt.status_code, attempt.error) == (None, "refused address")
    assert receiver.requests == []


def test_a_port_other_than_80_or_443_is_refused_at_delivery(receiver, settings, only_127_0_0_1_is_public):
    attempt = webhook_delivery.post(delivery_to(receiver.url("/ok")), public_only(settings))
    assert attempt.error == "refused address"
    assert receiver.requests == []


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def raw_server(answer: bytes | None) -> Iterator[int]:
    """A TCP port that accepts and then closes at once (answer None) or sends `answer` first; its port."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                if answer is not None:
                    conn.sendall(answer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        stop.set()
        thread.join()
        listener.close()


def test_connection_errors_do_not_tell_an_open_port_from_a_closed_one(settings):
    errors = {}
    errors["closed"] = webhook_delivery.post(delivery_to(f"http://127.0.0.1:{_closed_port()}/"), settings).error
    with raw_server(None) as port:
        errors["open, silent"] = webhook_delivery.post(delivery_to(f"http://127.0.0.1:{port}/"), settings).error
    with raw_server(b"SSH-2.0-OpenSSH_9.6\r\n") as port:
        errors["open, not HTTP"] = webhook_delivery.post(delivery_to(f"http://127.0.0.1:{port}/"), settings).error
    with raw_server(None) as port:
        errors["open, TLS"] = webhook_delivery.post(delivery_to(f"https://127.0.0.1:{port}/"), settings).error
    assert errors == dict.fromkeys(errors, "connection failed")


# --- TLS: SNI and the certificate are the name's -------------------------------------------------


def _certificates(tmp_path, name: str) -> tuple[str, str, str]:  # type: ignore[no-untyped-def]
    """A CA and a certificate it signed for `name`: (CA file, certificate file, key file)."""
    now = dt.datetime.now(dt.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(1).not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(hours=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                       crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    leaf = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(2)
            .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = (tmp_path / "ca.pem", tmp_path / "cert.pem", tmp_path / "key.pem")
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(paths[0]), str(paths[1]), str(paths[2])


@contextlib.contextmanager
def tls_receiver(cert: str, key: str) -> Iterator[tuple[int, list[str], list[str]]]:
    """An HTTPS server on 127.0.0.1 answering 204: its port, the SNI names and Host headers it saw."""
    names: list[str] = []
    hosts: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # the name http.server calls
            self.rfile.read(int(self.headers.get("content-length", 0)))
            hosts.append(str(self.headers["host"]))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    context.sni_callback = lambda sock, name, ctx: names.append(str(name))  # type: ignore[assignment,misc,func-returns-value]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], names, hosts
    finally:
        server.shutdown()
        server.server_close()


def test_tls_goes_to_the_checked_address_with_the_name_as_sni_and_certificate(monkeypatch, tmp_path, settings):
    ca, cert, key = _certificates(tmp_path, "hooks.example")
    dns = FakeDNS({"hooks.example": [["127.0.0.1"], ["127.0.0.2"]], "other.example": [["127.0.0.1"]]})
    monkeypatch.setattr(socket, "getaddrinfo", dns.getaddrinfo)
    monkeypatch.setattr(webhook_post, "ca_certs", lambda: ca)
    with tls_receiver(cert, key) as (port, names, hosts):
        attempt = webhook_delivery.post(delivery_to(f"https://hooks.example:{port}/in"), settings)
        assert (attempt.status_code, attempt.error) == (204, None)
        assert (names, hosts) == (["hooks.example"], [f"hooks.example:{port}"])
        assert dns.lookups == ["hooks.example"]

        # the certificate is checked against the name: a name it does not cover fails, though the address is right
        wrong = webhook_delivery.post(delivery_to(f"https://other.example:{port}/in"), settings)
        assert (wrong.status_code, wrong.error) == (None, "connection failed")
        assert hosts == [f"hooks.example:{port}"]


# --- one host's rate ----------------------------------------------------------------------------


def test_deliveries_to_one_host_wait_for_its_rate_and_are_not_failed(client, auth, conn, pool, settings, receiver):
    limited = dataclasses.replace(settings, webhook_host_rate_per_s=1.0)  # one a second, bursts of one
    register(client, auth, receiver.url("/a"))
    register(client, auth, receiver.url("/b"))
    register(client, auth, f"http://localhost:{receiver.port}/c")  # another host name: a bucket of its own
    mark_sent(conn, queue(client, auth))
    expand(conn)

    first = webhook_delivery.deliver_due_batch(pool, limited)
    assert len(first) == 3
    assert sorted(done.attempt is not None for done in first) == [False, True, True]
    assert len(receiver.requests) == 2 and {r.path for r in receiver.requests} >= {"/c"}
    [waiting] = [done for done in first if done.attempt is None]
    row = conn.execute("SELECT status, attempts, next_attempt_at > now(), in_flight_until FROM webhook_deliveries "
                       "WHERE id = %s", (waiting.delivery.id,)).fetchone()
    assert row == ("pending", 0, True, None)  # put back, not attempted, not failed
    assert conn.execute("SELECT count(*) FROM webhook_attempts WHERE delivery_id = %s",
                        (waiting.delivery.id,)).fetchone() == (0,)

    deadline = time.monotonic() + 10
    while len(receiver.requests) < 3:
        assert time.monotonic() < deadline, "the delivery put back was never sent"
        webhook_delivery.deliver_due_batch(pool, limited)
        time.sleep(0.1)
    assert conn.execute("SELECT DISTINCT status FROM webhook_deliveries").fetchall() == [("succeeded",)]
    gap = receiver.requests[2].at - min(r.at for r in receiver.requests[:2] if r.path != "/c")
    assert gap >= 0.8  # the second post to 127.0.0.1 came a second after the first, less jitter
