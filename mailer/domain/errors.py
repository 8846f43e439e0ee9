"""One error tree: every failure a client can see has a code and an HTTP status."""

from __future__ import annotations

from typing import Any


class MailerError(Exception):
    """Base of every error mailer reports to a client."""

    code = "internal_error"
    http_status = 500

    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}

    def to_dict(self) -> dict[str, Any]:
        """The error in the shape of SPEC.md: {"error": {code, message, details}}."""
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}


class MalformedRequest(MailerError):
    code = "malformed_request"
    http_status = 400


class Unauthorized(MailerError):
    code = "unauthorized"
    http_status = 401


class Forbidden(MailerError):
    code = "forbidden"
    http_status = 403


class NotFound(MailerError):
    code = "not_found"
    http_status = 404


class MethodNotAllowed(MailerError):
    code = "method_not_allowed"
    http_status = 405


class Conflict(MailerError):
    code = "conflict"
    http_status = 409


class PayloadTooLarge(MailerError):
    code = "payload_too_large"
    http_status = 413


class UnsupportedMediaType(MailerError):
    code = "unsupported_media_type"
    http_status = 415


class ValidationFailed(MailerError):
    code = "validation_error"
    http_status = 422


class RateLimited(MailerError):
    code = "rate_limited"
    http_status = 429

    def __init__(self, message: str, retry_after_s: int, details: dict[str, Any] | None = None) -> None:
        super().__init__(message, details)
        self.retry_after_s = retry_after_s


class DatabaseUnavailable(MailerError):
    code = "database_unavailable"
    http_status = 503
