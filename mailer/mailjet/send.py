"""Mailjet Send API v3.1 client: payload mapping, HTTP call and per-message result parsing."""

from __future__ import annotations

import email.utils
import http
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import requests
import requests.adapters
import urllib3.exceptions

MAX_MESSAGES = 50  # https://dev.mailjet.com/email/guides/send-api-v31/ (50 messages per call)
# Idle connections the client keeps to Mailjet: a worker's send tasks each make their lookups several at a
# time (MAILER_MAILJET_LOOKUP_CONCURRENCY), more than requests' default of 10, which would close the others.
POOL_CONNECTIONS = 100
# One message has up to 50 recipients, each a row; a job sent twice before has twice as many.
# https://dev.mailjet.com/email/reference/messages/#v3_get_message (Limit: 10 by default, 1000 at most)
LOOKUP_LIMIT = 1000
_KINDS = (("to", "To"), ("cc", "Cc"), ("bcc", "Bcc"))


@dataclass(frozen=True)
class OutgoingMessage:
    """One message to send: our job id (sent as CustomID) and the normalized message."""

    custom_id: str
    message: dict


@dataclass(frozen=True)
class AcceptedRecipient:
    """One recipient Mailjet accepted, with its own tracking MessageID."""

    kind: str
    position: int
    email: str
    message_id: int
    message_uuid: str | None


@dataclass(frozen=True)
class FoundRecipient:
    """One recipient of a message Mailjet lists under our CustomID: its address ("" when not shown)."""

    email: str
    message_id: int
    message_uuid: str | None


@dataclass(frozen=True)
class MessageResult:
    """The outcome of one message of a send call."""

    accepted: bool
    recipients: tuple[AcceptedRecipient, ...]
    error_code: str | None
    error_message: str | None


@dataclass(frozen=True)
class SendResponse:
    """Per-message outcomes, in the order the messages were given."""

    results: tuple[MessageResult, ...]
    status_code: int = 200  # 200, or 400 when some messages were rejected


class SendError(Exception):
    """The whole call failed; nothing in it is known to be accepted or rejected per message."""

    def __init__(
        self,
        message: str,
        *,
        transient: bool,
        ambiguous: bool,
        status_code: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.transient = transient
        self.ambiguous = ambiguous
        self.status_code = status_code
        self.retry_after = retry_after


def _address(addr: Mapping[str, Any]) -> dict[str, str]:
    out = {"Email": addr["email"]}
    if addr.get("name"):
        out["Name"] = addr["name"]
    return out


def _message_payload(outgoing: OutgoingMessage) -> dict[str, Any]:
    msg = outgoing.message
    out: dict[str, Any] = {"From": _address(msg["from"])}
    for key, field in _KINDS:
        if msg.get(key):
            out[field] = [_address(a) for a in msg[key]]
    if msg.get("reply_to"):
        out["ReplyTo"] = _address(msg["reply_to"])
    for key, field in (("subject", "Subject"), ("text", "TextPart"), ("html", "HTMLPart")):
        if msg.get(key):
            out[field] = msg[key]
    if msg.get("template_id") is not None:
        # Without TemplateLanguage the template's {{var:...}} tags are sent verbatim.
        # https://dev.mailjet.com/email/guides/send-api-v31/
        out["TemplateID"] = int(msg["template_id"])
        out["TemplateLanguage"] = True
        if msg.get("variables"):
            out["Variables"] = msg["variables"]
    if msg.get("attachments"):
        out["Attachments"] = [
            {
                "ContentType": a["content_type"],
                "Filename": a["filename"],
                "Base64Content": a["content"],
            }
            for a in msg["attachments"]
        ]
    if msg.get("headers"):
        out["Headers"] = dict(msg["headers"])
    out["CustomID"] = outgoing.custom_id
    return out


def build_payload(messages: Sequence[OutgoingMessage]) -> dict:
    """Build the v3.1 `{"Messages": [...]}` body for these messages."""
    return {"Messages": [_message_payload(m) for m in messages]}


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date), or None."""
    if not value or not value.strip():
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value.strip())
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return max(0.0, (when - datetime.now(UTC)).total_seconds())
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def _exact_int(value: Any) -> int | None:
    # bool is an int subclass and a float has already lost digits above 2**53: refuse both.
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    return None


def _reason(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _malformed(status: int, what: str) -> SendError:
    # A success status whose body we cannot read may still have sent the messages.
    return SendError(
        f"Mailjet {status}: unexpected response body ({what})",
        transient=True,
        ambiguous=True,
        status_code=status,
    )


def _position(sent: list[str], used: set[int], index: int, email_: str) -> int:
    """Index of this recipient in what we sent; the response index unless the addresses differ."""
    if index < len(sent) and index not in used and sent[index] == email_.casefold():
        return index
    for i, candidate in enumerate(sent):
        if i not in used and candidate == email_.casefold():
            return i
    return index


def _parse_result(item: Any, outgoing: OutgoingMessage, status: int) -> MessageResult:
    if not isinstance(item, dict):
        raise _malformed(status, "message result is not an object")
    if item.get("Status") != "success":
        errors = [e for e in item.get("Errors") or [] if isinstance(e, dict)]
        codes = [str(e["ErrorCode"]) for e in errors if e.get("ErrorCode")]
        texts = []
        for err in errors:
            text = str(err.get("ErrorMessage") or "").strip()
            related = [str(r) for r in err.get("ErrorRelatedTo") or []]
            texts.append(f"{text} ({', '.join(related)})" if related else text)
        message = "; ".join(t for t in texts if t) or f"Mailjet status {item.get('Status')!r}"
        return MessageResult(False, (), ",".join(codes) or None, message)
    recipients: list[AcceptedRecipient] = []
    for key, field in _KINDS:
        sent = [str(a["email"]).casefold() for a in outgoing.message.get(key) or []]
        used: set[int] = set()
        for index, rcpt in enumerate(item.get(field) or []):
            message_id = _exact_int(rcpt.get("MessageID")) if isinstance(rcpt, dict) else None
            if message_id is None:
                raise _malformed(status, f"{field}[{index}] has no integer MessageID")
            email_ = str(rcpt.get("Email") or "")
            position = _position(sent, used, index, email_)
            used.add(position)
            uuid = rcpt.get("MessageUUID")
            recipients.append(
                AcceptedRecipient(key, position, email_, message_id, str(uuid) if uuid else None)
            )
    return MessageResult(True, tuple(recipients), None, None)


def parse_send_answer(status: int, body: Any, messages: Sequence[OutgoingMessage]) -> SendResponse | None:
    """The per-message results of a send call's answer (HTTP status, JSON body); None when it has no Messages
    array (a global error). Test mode's answers go through here too (mailer/mailjet/simulation.py)."""
    # A 400 with Messages is a partly failed batch: the successes were sent and stand.
    # https://dev.mailjet.com/email/guides/send-api-v31/
    if status not in (200, 400) or not isinstance(body, dict) or "Messages" not in body:
        return None
    items = body["Messages"]
    if not isinstance(items, list) or len(items) != len(messages):
        raise _malformed(status, "Messages does not match the request")
    # Errors carry no CustomID: results match the request by position only.
    return SendResponse(tuple(_parse_result(i, m, status) for i, m in zip(items, messages, strict=True)), status)


def _global_error(response: requests.Response, body: Any) -> SendError:
    status = response.status_code
    text = f"Mailjet {status} {_reason(status)}"
    if isinstance(body, dict) and body.get("ErrorMessage"):
        text += f": {str(body['ErrorMessage'])[:200]}"
    retry_after = parse_retry_after(response.headers.get("Retry-After"))
    if status == 429:
        # Mailjet answers 429 with an HTML page; the request was refused, not processed.
        # https://dev.mailjet.com/email/guides/send-api-v31/
        return SendError(text, transient=True, ambiguous=False, status_code=status,
                         retry_after=retry_after)
    if status >= 500:
        return SendError(text, transient=True, ambiguous=True, status_code=status,
                         retry_after=retry_after)
    if 200 <= status < 300:
        return _malformed(status, "no Messages array")
    return SendError(text, transient=False, ambiguous=False, status_code=status)


def _transport_error(exc: requests.RequestException, timeout: float) -> SendError:
    # Never echo the exception text: it can contain URLs, and we keep messages short.
    if isinstance(exc, requests.ConnectTimeout):
        return SendError(f"Mailjet connect timeout after {timeout}s", transient=True,
                         ambiguous=False)
    if isinstance(exc, requests.ReadTimeout):
        return SendError(f"Mailjet read timeout after {timeout}s", transient=True, ambiguous=True)
    if isinstance(exc, requests.ConnectionError):
        reason = exc.args[0] if exc.args else None
        reason = getattr(reason, "reason", reason)
        # Refused or unresolvable: no byte of the request left this host.
        before_sending = isinstance(reason, urllib3.exceptions.NewConnectionError)
        return SendError(f"Mailjet connection failed ({type(reason).__name__})", transient=True,
                         ambiguous=not before_sending)
    return SendError(f"Mailjet request failed ({type(exc).__name__})", transient=True,
                     ambiguous=True)


class MailjetClient:
    """A thin client for the two Mailjet calls mailer makes."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        api_secret: str | None,
        timeout: float = 30.0,
        session: requests.Session | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._auth = (api_key or "", api_secret or "") if api_key or api_secret else None
        self.timeout = timeout
        self._owns_session = session is None
        if session is None:
            session = requests.Session()
            adapter = requests.adapters.HTTPAdapter(pool_maxsize=POOL_CONNECTIONS)
            session.mount("https://", adapter)
            session.mount("http://", adapter)
        self.session = session

    def __repr__(self) -> str:
        return f"MailjetClient({self.base_url!r})"  # never show the credentials

    def close(self) -> None:
        """Close the HTTP session if this client created it."""
        if self._owns_session:
            self.session.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        try:
            return self.session.request(
                method, f"{self.base_url}{path}", auth=self._auth, timeout=self.timeout,
                allow_redirects=False, **kwargs,
            )
        except requests.RequestException as exc:
            raise _transport_error(exc, self.timeout) from None

    def send(self, messages: Sequence[OutgoingMessage]) -> SendResponse:
        """POST the messages to /v3.1/send and return one result per message, in order."""
        if not messages:
            raise ValueError("no messages to send")
        if len(messages) > MAX_MESSAGES:
            raise ValueError(f"at most {MAX_MESSAGES} messages per call, got {len(messages)}")
        response = self._request("POST", "/v3.1/send", json=build_payload(messages))
        try:
            body = response.json()
        except ValueError:
            body = None
        answer = parse_send_answer(response.status_code, body, messages)
        if answer is None:
            raise _global_error(response, body)
        return answer

    def find_by_custom_id(self, custom_id: str) -> list[FoundRecipient]:
        """The recipients of every message Mailjet accepted under this CustomID (one REST `message` row each)."""
        # ContactAlt (the address) and CustomID are in a row only when asked for.
        # https://dev.mailjet.com/email/reference/messages/#v3_get_message
        response = self._request("GET", "/v3/REST/message", params={
            "CustomID": custom_id, "ShowContactAlt": "true", "ShowCustomID": "true", "Limit": LOOKUP_LIMIT,
        })
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code == 200 and isinstance(body, dict) and isinstance(body.get("Data"), list):
            return _found(body["Data"], custom_id)
        error = _global_error(response, body)
        error.ambiguous = False  # a lookup changes nothing
        raise error


def _found(rows: list[Any], custom_id: str) -> list[FoundRecipient]:
    """The rows of this CustomID, should Mailjet ignore the filter (a client that passed it wrongly got the
    account's last messages: github.com/mailjet/mailjet-apiv3-php/issues/201); a row we cannot read fails
    the lookup."""
    found = []
    for row in rows:
        if not isinstance(row, dict) or "CustomID" not in row:
            # Taken as "not ours", such rows would make us send a message Mailjet already has.
            raise _lookup_malformed("a message row has no CustomID")
        if str(row["CustomID"]) != custom_id:
            continue
        message_id = _exact_int(row.get("ID"))
        if message_id is None:
            raise _lookup_malformed("a message row has no integer ID")
        uuid = row.get("UUID") or row.get("MessageUUID")
        found.append(FoundRecipient(str(row.get("ContactAlt") or ""), message_id, str(uuid) if uuid else None))
    return found


def _lookup_malformed(what: str) -> SendError:
    return SendError(f"Mailjet 200: unexpected lookup answer ({what})", transient=True, ambiguous=False,
                     status_code=200)
