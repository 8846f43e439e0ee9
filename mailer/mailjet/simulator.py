"""A local stand-in for Mailjet: Send API v3.1, REST message lookup, Event API callbacks, faults."""

from __future__ import annotations

import argparse
import base64
import concurrent.futures
import dataclasses
import heapq
import hmac
import itertools
import json
import logging
import signal
import threading
import time
import urllib.parse
import uuid
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import urllib3
from flask import Flask, Response, request
from werkzeug.serving import BaseWSGIServer, make_server

from mailer.mailjet import simulation

log = logging.getLogger(__name__)

FIRST_MESSAGE_ID = 2**58  # 288230376151711744: real MessageIDs are above 2**53 as well
MAX_MESSAGES = 50
BEHAVIOURS = frozenset({"ok", "429", "429_retry_after", "500", "timeout", "accept_then_500"})
EVENT_MAX_ATTEMPTS = 5
EVENT_RETRY_DELAY_S = 0.5
# Single events (one per POST, Mailjet's default) go out over this many connections at once, each kept alive:
# one connection at a time could not keep up with a few hundred emails a second.
EVENT_POSTERS = 8
_HTML_429 = (
    "<html><head><title>429 Too Many Requests</title></head><body>"
    "<center><h1>429 Too Many Requests</h1></center><hr><center>nginx</center></body></html>"
)


def restart_safe_first_message_id() -> int:
    """A first MessageID above every one a simulator started earlier on this machine could have given
    (microseconds since 1970 on top of FIRST_MESSAGE_ID), for a database that outlives the simulator."""
    return FIRST_MESSAGE_ID + time.time_ns() // 1_000


@dataclasses.dataclass
class SimulatorConfig:
    """How the simulator authenticates, where it posts events and how fast it is."""

    api_key: str
    api_secret: str
    events_url: str | None = None
    events_auth: str | None = None
    latency_s: float = 0.0
    event_delay_s: float = 0.2
    grouped_events: bool = True
    open_delay_s: float = 1.0
    timeout_s: float = 5.0
    first_message_id: int = FIRST_MESSAGE_ID
    # A fault: GET /v3/REST/message lists every message, whatever its CustomID filter says.
    lookup_ignores_custom_id: bool = False
    # Mailjet lists an accepted message in GET /v3/REST/message only some time later: this long after it.
    listing_delay_s: float = 0.0


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    # json.dumps keeps big ints exact and key order as Mailjet writes it.
    return Response(json.dumps(body), status, headers, mimetype="application/json")


def _global_error(code: str, message: str, status: int = 400) -> Response:
    return _json({"ErrorIdentifier": str(uuid.uuid4()), "ErrorCode": code, "StatusCode": status,
                  "ErrorMessage": message}, status)


# The JSON type of each message property Mailjet reads (the others are left alone here).
_TYPES: dict[str, type] = {
    **dict.fromkeys(("Subject", "TextPart", "HTMLPart", "CustomID", "CustomCampaign", "EventPayload",
                     "TrackOpens", "TrackClicks", "TemplateErrorReporting"), str),
    **dict.fromkeys(("From", "ReplyTo", "Variables", "Headers"), dict),
    **dict.fromkeys(("To", "Cc", "Bcc", "Attachments", "InlinedAttachments"), list),
    "TemplateID": int, "TemplateLanguage": bool,
}


def _mistyped(msg: dict[str, Any]) -> str | None:
    """The first property of a message whose JSON type Mailjet cannot read, or None.

    Mailjet reads the whole body into typed structures before it looks at any message, so a property of
    the wrong type (a number as a header value, a list as Variables) refuses the call as a whole: a global
    400 mj-0002, "Malformed JSON, please review the syntax and properties types", with no Messages array.
    """
    checks: list[tuple[str, Any, type]] = [(name, msg[name], kind) for name, kind in _TYPES.items() if name in msg]
    headers = msg.get("Headers")
    headers = headers if isinstance(headers, dict) else {}
    checks += [(f"Headers.{name}", value, str) for name, value in headers.items()]
    for field in ("Attachments", "InlinedAttachments"):
        items = msg.get(field)
        for i, item in enumerate(items if isinstance(items, list) else ()):
            if not isinstance(item, dict):
                return f"{field}[{i}]"
            checks += [(f"{field}[{i}].{key}", item[key], str)
                       for key in ("ContentType", "Filename", "Base64Content", "ContentID") if key in item]
    for name, value, kind in checks:
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            return name
    return None


_OPEN = (True, "open", simulation.CLIENT)
# Recipient local part -> (after the open delay?, event, extra fields); first match wins.
_SCENARIOS: tuple[tuple[str, tuple[tuple[bool, str, dict[str, Any]], ...]], ...] = (
    ("softbounce", ((False, "bounce", simulation.SOFT_BOUNCE),)),
    ("bounce", ((False, "bounce", simulation.HARD_BOUNCE),)),
    ("blocked", ((False, "blocked", simulation.BLOCKED),)),
    ("spam", ((False, "sent", {}), (True, "spam", simulation.SPAM))),
    ("unsub", ((False, "sent", {}), _OPEN, (True, "unsub", simulation.UNSUB))),
    ("click", ((False, "sent", {}), _OPEN, (True, "click", simulation.CLIENT))),
    ("", ((False, "sent", {}), _OPEN)),
)


def _events_for(rcpt: dict[str, Any], msg: dict[str, Any], open_delay: float,
                ) -> list[tuple[float, dict[str, Any]]]:
    """The (offset, event) pairs Mailjet would post for this recipient."""
    local = rcpt["Email"].split("@", 1)[0].lower()
    steps = next(steps for key, steps in _SCENARIOS if key in local)
    return [(open_delay if after_open else 0.0, simulation.event(rcpt, msg, name, extra))
            for after_open, name, extra in steps]


class _Dispatcher:
    """Posts scheduled events in time order (a heap), with retries: grouped from one thread, single events
    from EVENT_POSTERS threads at once."""

    def __init__(self, config: Callable[[], SimulatorConfig]) -> None:
        self._config = config
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, int, dict[str, Any]]] = []
        self._seq = itertools.count()
        self._running = False
        self._in_flight = 0
        self._slots = threading.BoundedSemaphore(EVENT_POSTERS)
        self._posters: concurrent.futures.ThreadPoolExecutor | None = None
        # Connections kept alive, one per poster thread at most.
        self._http = urllib3.PoolManager(maxsize=EVENT_POSTERS, block=False)

    def schedule(self, items: list[tuple[float, dict[str, Any]]], attempt: int = 0) -> None:
        """Queue (delay, event) pairs; the worker starts on demand and stops when idle."""
        with self._cond:
            for delay, event in items:
                event.setdefault("time", int(time.time() + delay))
                due = time.monotonic() + delay
                heapq.heappush(self._heap, (due, next(self._seq), attempt, event))
            if not self._running:
                self._running = True
                threading.Thread(target=self._run, name="mj-sim-events", daemon=True).start()
            self._cond.notify()

    def clear(self) -> None:
        """Drop every pending event."""
        with self._cond:
            self._heap.clear()

    def pending(self) -> int:
        """Events scheduled or being posted."""
        with self._cond:
            return len(self._heap) + self._in_flight

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    if not self._heap:
                        self._running = False
                        return
                    wait = self._heap[0][0] - time.monotonic()
                    if wait <= 0:
                        break
                    self._cond.wait(wait)
                now, due = time.monotonic(), []
                while self._heap and self._heap[0][0] <= now:
                    due.append(heapq.heappop(self._heap))
                self._in_flight += len(due)
            try:
                self._deliver(due)
            except Exception:
                log.exception("event delivery crashed; events dropped")

    def _deliver(self, due: list[tuple[float, int, int, dict[str, Any]]]) -> None:
        config = self._config()
        if config.grouped_events:
            # Version 2 callbacks group the events of the last second in one array.
            # https://dev.mailjet.com/email/guides/webhooks/
            self._post_batch(config, due, [event for *_, event in due])
            return
        if self._posters is None:
            self._posters = concurrent.futures.ThreadPoolExecutor(EVENT_POSTERS, thread_name_prefix="mj-sim-post")
        for item in due:
            self._slots.acquire()  # at most EVENT_POSTERS at once; the rest wait here, in order
            self._posters.submit(self._post_single, config, item)

    def _post_single(self, config: SimulatorConfig, item: tuple[float, int, int, dict[str, Any]]) -> None:
        try:
            self._post_batch(config, [item], item[3])
        except Exception:
            log.exception("posting an event crashed; event dropped")
        finally:
            self._slots.release()

    def _post_batch(self, config: SimulatorConfig, batch: list[tuple[float, int, int, dict[str, Any]]],
                    body: Any) -> None:
        """POST one body; on failure schedule its events again (up to EVENT_MAX_ATTEMPTS)."""
        try:
            if self._post(config, body):
                return
            for _, _, attempt, event in batch:
                if attempt + 1 < EVENT_MAX_ATTEMPTS:
                    self.schedule([(EVENT_RETRY_DELAY_S * (attempt + 1), event)], attempt + 1)
                else:
                    log.warning("giving up on %s event for %s", event["event"], event["email"])
        finally:
            with self._cond:
                self._in_flight -= len(batch)

    def _post(self, config: SimulatorConfig, body: Any) -> bool:
        if not config.events_url:
            return True
        headers = {"Content-Type": "application/json"}
        # Mailjet takes the credentials in the callback URL (https://user:pass@host/events) and sends them as
        # basic auth; events_auth, when set, wins.
        parts = urllib.parse.urlsplit(config.events_url)
        userinfo, _, host = parts.netloc.rpartition("@")
        url = parts._replace(netloc=host).geturl()
        credentials = config.events_auth or urllib.parse.unquote(userinfo)
        if credentials:
            headers["Authorization"] = "Basic " + base64.b64encode(credentials.encode()).decode()
        try:
            # urllib3 straight (what requests runs on): a fraction of requests' CPU per POST, which counts when
            # the benchmark's events, one per POST, share the machine with what they measure.
            response = self._http.request("POST", url, body=json.dumps(body).encode(),
                                          headers=headers, timeout=5.0, retries=False)
        except urllib3.exceptions.HTTPError as exc:
            log.warning("posting events failed: %s", type(exc).__name__)
            return False
        # Mailjet retries anything but exactly 200.
        if response.status != 200:
            log.warning("events endpoint answered %s", response.status)
        return response.status == 200


class _Simulator:
    """The simulator's state: config, scripted faults, accepted messages."""

    def __init__(self, config: SimulatorConfig) -> None:
        self.config = dataclasses.replace(config)
        self.lock = threading.Lock()
        self.ids = itertools.count(config.first_message_id)
        self.dispatcher = _Dispatcher(lambda: self.config)
        self.calls = 0
        self.call_bytes: list[int] = []  # the body size of each send call, in order
        self.script: deque[str] = deque()
        self.accepted: list[dict[str, Any]] = []

    def reset(self) -> None:
        """Forget calls, script, accepted messages and pending events (IDs keep counting)."""
        with self.lock:
            self.calls = 0
            self.call_bytes.clear()
            self.script.clear()
            self.accepted.clear()
        self.dispatcher.clear()

    def accept(self, msg: dict[str, Any], href: str, sandbox: bool) -> dict[str, Any]:
        """Give each recipient its MessageID, record the message and schedule its events."""
        result: dict[str, Any] = {"Status": "success", "CustomID": msg.get("CustomID", "")}
        recipients = []
        for field in ("To", "Cc", "Bcc"):
            result[field] = []
            for rcpt in msg.get(field) or []:
                with self.lock:
                    message_id = 0 if sandbox else next(self.ids)
                entry = {"Email": rcpt["Email"], "MessageUUID": str(uuid.uuid4()),
                         "MessageID": message_id, "MessageHref": f"{href}{message_id}"}
                result[field].append(entry)
                recipients.append(entry)
        if sandbox:  # https://dev.mailjet.com/email/guides/send-api-v31/ (SandboxMode)
            return result
        config = self.config
        with self.lock:
            self.accepted.append({"custom_id": msg.get("CustomID", ""), "recipients": recipients,
                                  "at": datetime.now(UTC).isoformat(), "payload": msg,
                                  "listed_at": time.monotonic() + config.listing_delay_s})
        if config.events_url:
            self.dispatcher.schedule([
                (config.event_delay_s + offset, event) for rcpt in recipients
                for offset, event in _events_for(rcpt, msg, config.open_delay_s)])
        return result

    def rows(self, custom_id: str | None, show_contact: bool = True, show_custom_id: bool = True,
             ) -> list[dict[str, Any]]:
        """REST `message` rows, one per accepted recipient, optionally for one CustomID; the address
        (ContactAlt) and the CustomID only when asked for, as Mailjet shows them."""
        with self.lock:
            rows, now = [], time.monotonic()
            for m in self.accepted:
                if (custom_id is not None and m["custom_id"] != custom_id) or m["listed_at"] > now:
                    continue
                for r in m["recipients"]:
                    row = {"ID": r["MessageID"], "UUID": r["MessageUUID"], "Status": "sent",
                           "ArrivedAt": m["at"], "Subject": m["payload"].get("Subject", "")}
                    if show_contact:
                        row["ContactAlt"] = r["Email"]
                    if show_custom_id:
                        row["CustomID"] = m["custom_id"]
                    rows.append(row)
            return rows


def _shown(name: str) -> bool:
    """A REST `Show...` filter: Mailjet takes true/false (and 1/0)."""
    return request.args.get(name, "").strip().lower() in ("true", "1")


def _authorized(config: SimulatorConfig) -> bool:
    auth = request.authorization
    if auth is None or auth.type != "basic":
        return False
    # Compare both, always: no early exit that would tell which half was wrong.
    user_ok = hmac.compare_digest((auth.username or "").encode(), config.api_key.encode())
    password_ok = hmac.compare_digest((auth.password or "").encode(), config.api_secret.encode())
    return user_ok and password_ok


def _config_value_ok(key: str, value: Any) -> bool:
    if key.endswith("_s"):
        return isinstance(value, int | float) and not isinstance(value, bool) and value >= 0
    if key in ("grouped_events", "lookup_ignores_custom_id"):
        return isinstance(value, bool)
    if key in ("api_key", "api_secret"):
        return isinstance(value, str)
    return key in ("events_url", "events_auth") and (value is None or isinstance(value, str))


def create_simulator(config: SimulatorConfig) -> Flask:
    """Build the simulator's WSGI app; its state lives in app.extensions["mailjet_simulator"]."""
    app = Flask(__name__)
    sim = _Simulator(config)
    app.extensions["mailjet_simulator"] = sim

    @app.before_request
    def check_auth() -> Response | None:
        if request.path.startswith("/_sim/") or _authorized(sim.config):
            return None
        return _json({"ErrorIdentifier": str(uuid.uuid4()), "StatusCode": 401,
                      "ErrorMessage": "API key authentication/authorization failure. You may be "
                      "unauthorized to access the API or your API key may be expired."},
                     401, {"WWW-Authenticate": 'Basic realm="Provide an apiKey and secretKey"'})

    @app.post("/v3.1/send")
    def send() -> Response:
        config = sim.config
        with sim.lock:
            sim.calls += 1
            sim.call_bytes.append(request.content_length or 0)
            behaviour = sim.script.popleft() if sim.script else "ok"
        if config.latency_s > 0:
            time.sleep(config.latency_s)
        if behaviour.startswith("429"):
            # Rate limiting answers with an HTML page, not JSON; Retry-After is not promised.
            # https://dev.mailjet.com/email/guides/send-api-v31/
            headers = {"Retry-After": "1"} if behaviour == "429_retry_after" else None
            return Response(_HTML_429, 429, headers, mimetype="text/html")
        if behaviour == "500":
            return _global_error("mj-0000", "Internal Server Error", 500)
        body = request.get_json(force=True, silent=True)
        if not isinstance(body, dict):
            body = {}
        messages = body.get("Messages")
        if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
            return _global_error("mj-0002", "Malformed JSON, please review the syntax and "
                                 "properties types.")
        if not 1 <= len(messages) <= MAX_MESSAGES:
            return _global_error("send-0002", f"Messages must hold 1 to {MAX_MESSAGES} items.")
        if any(_mistyped(msg) for msg in messages):
            return _global_error("mj-0002", "Malformed JSON, please review the syntax and "
                                 "properties types.")
        href = f"{request.host_url}v3/REST/message/"
        results = []
        for msg in messages:
            errors = simulation.message_errors(msg)
            results.append({"Errors": errors, "Status": "error"} if errors
                           else sim.accept(msg, href, body.get("SandboxMode") is True))
        if behaviour == "timeout":
            time.sleep(config.timeout_s)
        if behaviour == "accept_then_500":
            return _global_error("mj-0000", "Internal Server Error", 500)
        # One failed message makes the whole call a 400, though the others were sent.
        # https://dev.mailjet.com/email/guides/send-api-v31/
        failed = any(r["Status"] == "error" for r in results)
        return _json({"Messages": results}, 400 if failed else 200)

    @app.get("/v3/REST/message")
    @app.get("/v3/REST/message/<int:message_id>")
    def messages(message_id: int | None = None) -> Response:
        # https://dev.mailjet.com/email/reference/messages/#v3_get_message: ContactAlt only with
        # ShowContactAlt=true, CustomID only with ShowCustomID=true, Limit 10 by default (1000 at most).
        config = sim.config
        if config.latency_s > 0:
            time.sleep(config.latency_s)
        custom_id = None if config.lookup_ignores_custom_id else request.args.get("CustomID")
        rows = [r for r in sim.rows(custom_id, _shown("ShowContactAlt"), _shown("ShowCustomID"))
                if message_id in (None, r["ID"])]
        if message_id is not None and not rows:
            return _json({"ErrorInfo": "", "ErrorMessage": "Object not found", "StatusCode": 404},
                         404)
        limit = request.args.get("Limit", "10")
        offset = request.args.get("Offset", "0")
        if not (limit.isdigit() and offset.isdigit()):
            return _json({"ErrorInfo": "", "ErrorMessage": "Invalid Limit or Offset", "StatusCode": 400}, 400)
        page = rows[int(offset):][:min(int(limit), 1000)]
        return _json({"Count": len(page), "Data": page, "Total": len(rows)})

    @app.post("/_sim/script")
    def script() -> Response:
        body = request.get_json(force=True, silent=True)
        items = body.get("responses") if isinstance(body, dict) else None
        if not isinstance(items, list) or not all(i in BEHAVIOURS for i in map(str, items)):
            return _json({"error": f"responses must be a list of {sorted(BEHAVIOURS)}"}, 400)
        with sim.lock:
            sim.script.extend(map(str, items))
            return _json({"queued": list(sim.script)})

    @app.get("/_sim/sends")
    def sends() -> Response:
        if request.args.get("summary"):  # only the counts, without every message (polled while busy)
            with sim.lock:
                calls = sim.calls
            return _json({"calls": calls, "pending_events": sim.dispatcher.pending()})
        with sim.lock:
            messages = [{"custom_id": m["custom_id"], "at": m["at"], "headers": m["payload"].get("Headers") or {},
                         "recipients": [{"email": r["Email"], "message_id": str(r["MessageID"])}
                                        for r in m["recipients"]]} for m in sim.accepted]
            if request.args.get("payloads"):  # each message as it was sent (Subject, TextPart, HTMLPart...)
                for shown, m in zip(messages, sim.accepted, strict=True):
                    shown["payload"] = m["payload"]
            counts: dict[str, int] = {}
            for m in sim.accepted:
                counts[m["custom_id"]] = counts.get(m["custom_id"], 0) + 1
            return _json({"calls": sim.calls, "call_bytes": sim.call_bytes, "messages": messages,
                          "by_custom_id": counts, "pending_events": sim.dispatcher.pending()})

    @app.post("/_sim/reset")
    def reset() -> Response:
        sim.reset()
        return _json({"reset": True})

    @app.route("/_sim/config", methods=["GET", "POST"])
    def update_config() -> Response:
        changes = request.get_json(force=True, silent=True) if request.method == "POST" else {}
        if not isinstance(changes, dict) or any(not _config_value_ok(k, v)
                                                for k, v in changes.items()):
            return _json({"error": "expected an object of SimulatorConfig fields"}, 400)
        sim.config = dataclasses.replace(sim.config, **changes)
        return _json({k: v for k, v in dataclasses.asdict(sim.config).items()
                      if k != "api_secret"})

    return app


def start_in_thread(host: str, port: int, config: SimulatorConfig,
                    ) -> tuple[BaseWSGIServer, threading.Thread]:
    """Serve the simulator from a daemon thread; stop it with server.shutdown()."""
    server = make_server(host, port, create_simulator(config), threaded=True)
    # A short poll interval makes shutdown() quick, which tests do often.
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), name="mj-sim",
                              daemon=True)
    thread.start()
    return server, thread


def run_simulator(host: str, port: int, config: SimulatorConfig) -> None:
    """Serve the simulator (threaded) until KeyboardInterrupt or SIGTERM."""
    server = make_server(host, port, create_simulator(config), threaded=True)

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, stop)
    print(f"mailjet simulator listening on http://{host}:{server.server_port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def main(argv: list[str] | None = None) -> None:
    """Command line: python -m mailer.mailjet.simulator --port 8025 ..."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8025)
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--api-secret", required=True)
    parser.add_argument("--events-url")
    parser.add_argument("--events-auth", help="user:pass sent as basic auth with events")
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--single-events", action="store_true",
                        help="post one event object per request (Event API version 1)")
    parser.add_argument("--first-message-id", type=int, default=FIRST_MESSAGE_ID,
                        help="the first MessageID given (later ones count up from it)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    config = SimulatorConfig(
        api_key=args.api_key, api_secret=args.api_secret, events_url=args.events_url,
        events_auth=args.events_auth, latency_s=args.latency_ms / 1000,
        grouped_events=not args.single_events, first_message_id=args.first_message_id,
    )
    run_simulator(args.host, args.port, config)


if __name__ == "__main__":
    main()
