"""Mailjet played by mailer itself: how Mailjet judges a message and the events it posts, shared by the simulator
(`mailer dev`, tests) and test mode, whose sends the worker answers without any network (TestModeClient)."""

from __future__ import annotations

import re
import secrets
import uuid
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

from mailer.mailjet import send

# Headers Mailjet sets itself and refuses to take from the caller (error send-0011).
# https://dev.mailjet.com/email/guides/send-api-v31/
FORBIDDEN_HEADERS = frozenset(h.lower() for h in (
    "From", "Sender", "Subject", "To", "Cc", "Bcc", "Return-Path", "Delivered-To", "Message-Id",
    "DKIM-Signature", "DomainKey-Status", "Received-SPF", "Authentication-Results", "Received",
    "User-Agent", "X-Mailer", "X-Mailjet-Prio", "X-Mailjet-Debug", "X-Mailjet-Campaign",
    "X-Mailjet-TrackOpen", "X-Mailjet-TrackClick", "X-MJ-CustomID", "X-MJ-EventPayload",
    "X-MJ-Vars", "X-MJ-TemplateID", "X-MJ-TemplateLanguage", "X-MJ-TemplateErrorDeliver",
    "X-MJ-TemplateErrorReporting", "Content-Type", "Content-Transfer-Encoding", "MIME-Version",
))
_EMAIL = re.compile(r"^[^@\s]+@[^@\s.]+(\.[^@\s.]+)+$")
_HREF = re.compile(r"""href=["'](https?://[^"']+)""")
CLIENT = {"ip": "203.0.113.7", "geo": "FR", "agent": "Mozilla/5.0 (mailjet-simulator)"}
HARD_BOUNCE = {"blocked": False, "hard_bounce": True, "error_related_to": "recipient",
               "error": "user unknown", "comment": "550 5.1.1 Recipient address rejected: User unknown"}
SOFT_BOUNCE = {"blocked": False, "hard_bounce": False, "error_related_to": "domain",
               "error": "greylisted", "comment": "451 4.7.1 Greylisted, please try again later"}
BLOCKED = {"error_related_to": "mailjet", "error": "preblocked"}
SPAM = {"source": "JMRPP"}
UNSUB = {"mj_list_id": 1, **CLIENT}

# Test mode: the domain whose local parts choose what happens to a test app's message (README "Test mode").
TEST_DOMAIN = "simulator.mailer.test"
REJECTED = "rejected"  # Mailjet refuses the message (the job fails, its error naming the recipient)
# Local part -> the events Mailjet posts for the recipient, one step each (steps arrive one after the other, like
# separate POSTs, so each status change is its own); any other address is `delivered`.
TEST_SCENARIOS: dict[str, tuple[tuple[str, Mapping[str, Any]], ...]] = {
    "delivered": (("sent", {}),),
    "opened": (("sent", {}), ("open", CLIENT)),
    "clicked": (("sent", {}), ("open", CLIENT), ("click", CLIENT)),
    "bounced": (("bounce", HARD_BOUNCE),),
    "deferred": (("bounce", SOFT_BOUNCE),),
    "blocked": (("blocked", BLOCKED),),
    "spam": (("sent", {}), ("spam", SPAM)),
    "unsubscribed": (("sent", {}), ("open", CLIENT), ("unsub", UNSUB)),
}
# Test MessageIDs lie in [2**62, 2**63): above 2**53 and bigint like Mailjet's (which are near 2**58, as are the
# simulator's), random, so that processes and restarts never give one twice, and apart from every real one, which
# events without a CustomID are matched by.
TEST_MESSAGE_ID_BASE = 2**62
_TEST_HREF = f"https://{TEST_DOMAIN}/v3/REST/message/"


def error(code: str, message: str, related: list[str], status: int = 400) -> dict[str, Any]:
    """One entry of a failed message's Errors, as Mailjet writes it."""
    return {"ErrorIdentifier": str(uuid.uuid4()), "ErrorCode": code, "StatusCode": status,
            "ErrorMessage": message, "ErrorRelatedTo": related}


def valid_email(value: Any) -> bool:
    """Whether Mailjet takes this as an address (the simulator's approximation)."""
    return (isinstance(value, str) and _EMAIL.match(value) is not None
            and not value.lower().endswith(".invalid"))


def message_errors(msg: dict[str, Any]) -> list[dict[str, Any]]:
    """Validate one message as Mailjet does, collecting every error."""
    errors = []
    sender = msg.get("From")
    if not isinstance(sender, dict):
        errors.append(error("mj-0003", "Missing mandatory property.", ["From"]))
    elif not valid_email(sender.get("Email")):
        errors.append(error("mj-0013", f'"{sender.get("Email")}" is an invalid email address.',
                            ["From.Email"]))
    if not msg.get("To"):
        errors.append(error("mj-0003", "Missing mandatory property.", ["To"]))
    for field in ("To", "Cc", "Bcc"):
        for i, rcpt in enumerate(msg.get(field) or []):
            address = rcpt.get("Email") if isinstance(rcpt, dict) else rcpt
            if not valid_email(address):
                errors.append(error("mj-0013", f'"{address}" is an invalid email address.',
                                    [f"{field}[{i}].Email"]))
    if not (msg.get("TextPart") or msg.get("HTMLPart") or msg.get("TemplateID")):
        errors.append(error("send-0003", 'At least "HTMLPart", "TextPart" or "TemplateID" '
                            "must be provided.", ["HTMLPart", "TextPart", "TemplateID"]))
    headers = msg.get("Headers")
    for name in headers if isinstance(headers, dict) else {}:
        if name.lower() in FORBIDDEN_HEADERS:
            errors.append(error("send-0011", f'"{name}" header can not be customized.',
                                [f"Headers.{name}"]))
    return errors


def event(rcpt: Mapping[str, Any], msg: Mapping[str, Any], name: str, extra: Mapping[str, Any]) -> dict[str, Any]:
    """The Event API object Mailjet posts for `name` about one accepted recipient (Email, MessageID,
    MessageUUID) of a message (its Send API payload); `time` is the poster's to add."""
    # https://dev.mailjet.com/email/guides/webhooks/ (the fields of each event type)
    base = {"event": name, "MessageID": rcpt["MessageID"], "Message_GUID": rcpt["MessageUUID"],
            "email": rcpt["Email"], "mj_campaign_id": 1,
            "mj_contact_id": zlib.crc32(rcpt["Email"].lower().encode()),
            "customcampaign": msg.get("CustomCampaign", ""), "CustomID": msg.get("CustomID", ""),
            "Payload": msg.get("EventPayload", "")}
    if name == "sent":
        base.update({"mj_message_id": str(rcpt["MessageID"]), "smtp_reply": "sent (250 2.0.0 OK mailjet-simulator)"})
    elif name == "click":
        href = _HREF.search(msg.get("HTMLPart") or "")
        base["url"] = href.group(1) if href else "https://example.com/"
    return {**base, **extra}


def test_scenario(address: str) -> str | None:
    """The magic local part of a test address at TEST_DOMAIN (any case), or None."""
    local, _, domain = address.strip().lower().rpartition("@")
    if domain != TEST_DOMAIN:
        return None
    return local if local in TEST_SCENARIOS or local == REJECTED else None


class TestModeClient:
    """Answers a send call of test apps' messages as Mailjet would, without any network: the same request body
    (send.build_payload), judged as the simulator judges it, with `rejected@simulator.mailer.test` refused, and
    the answer read by the same parser as Mailjet's (send.parse_send_answer)."""

    def send(self, messages: Sequence[send.OutgoingMessage]) -> send.SendResponse:
        """One result per message, in order; MessageIDs above 2**53 for each accepted recipient."""
        payload = send.build_payload(messages)
        results = [self._answer(msg) for msg in payload["Messages"]]
        # One refused message makes Mailjet's answer a 400, though the others were accepted.
        failed = any(result["Status"] == "error" for result in results)
        answer = send.parse_send_answer(400 if failed else 200, {"Messages": results}, messages)
        assert answer is not None  # noqa: S101  # the answer always has its Messages array
        return answer

    @staticmethod
    def _answer(msg: dict[str, Any]) -> dict[str, Any]:
        errors = message_errors(msg)
        for field in ("To", "Cc", "Bcc"):
            for i, rcpt in enumerate(msg.get(field) or []):
                if test_scenario(rcpt["Email"]) == REJECTED:
                    errors.append(error("mj-0013", f'"{rcpt["Email"]}" is an invalid email address.',
                                        [f"{field}[{i}].Email"]))
        if errors:
            return {"Status": "error", "Errors": errors}
        result: dict[str, Any] = {"Status": "success", "CustomID": msg.get("CustomID", "")}
        for field in ("To", "Cc", "Bcc"):
            result[field] = []
            for rcpt in msg.get(field) or []:
                message_id = TEST_MESSAGE_ID_BASE + secrets.randbits(62)
                result[field].append({"Email": rcpt["Email"], "MessageUUID": str(uuid.uuid4()),
                                      "MessageID": message_id, "MessageHref": f"{_TEST_HREF}{message_id}"})
        return result


def test_events(
    outgoing: send.OutgoingMessage, recipients: Sequence[send.AcceptedRecipient], at: int
) -> list[list[dict[str, Any]]]:
    """The events Mailjet would post, at unix time `at`, for a test message it accepted: step by step (the
    first events of every recipient, then the second ones...)."""
    msg = send.build_payload([outgoing])["Messages"][0]
    steps: list[list[dict[str, Any]]] = []
    for recipient in recipients:
        rcpt = {"Email": recipient.email, "MessageID": recipient.message_id, "MessageUUID": recipient.message_uuid}
        scenario = TEST_SCENARIOS.get(test_scenario(recipient.email) or "", TEST_SCENARIOS["delivered"])
        for index, (name, extra) in enumerate(scenario):
            if index == len(steps):
                steps.append([])
            steps[index].append({**event(rcpt, msg, name, extra), "time": at})
    return steps
