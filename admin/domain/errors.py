"""What the admin refuses, as one tree with one HTTP status per kind.

    AdminError (400)        a request the admin refuses
      Invalid (400)         breaks validation; ``errors`` lists every problem with its path
      NotFound (404)        no such object, version, member or operation
      Conflict (409)        a concurrent edit, a name taken, an object still in use
      StoreUnavailable (503) the store (PostgreSQL) cannot be reached; nothing was applied

The REST API and the web UI render these the same way and with the same status: the rule
lives here, not in the edges. A malformed request is 400 whether the body is not JSON or an
object breaks the schema, so a client has one status to handle for "fix your input".

``validation_errors`` formats pydantic errors from the data plane's problem list
(``slb.model.pydantic_problems``), in the admin API's path notation.
"""

from __future__ import annotations

from pydantic import ValidationError

from slb.model import pydantic_problems


class AdminError(Exception):
    status = 400

    def __init__(self, message: str, errors: list[str] | None = None) -> None:
        super().__init__(message)
        self.errors = errors or []


class Invalid(AdminError):
    status = 400


class NotFound(AdminError):
    status = 404


class Conflict(AdminError):
    status = 409


class StoreUnavailable(AdminError):
    """The store's connection failed; the transaction was rolled back, so retrying is safe."""

    status = 503


def validation_errors(exc: ValidationError, prefix: str = "") -> list[str]:
    """``path: message`` per error, ``prefix`` before each (a file name).

    The problems are the data plane's (``slb.model.pydantic_problems``: one place decides the
    messages); the path keeps the admin API's documented notation, ``members.0.address``.
    """
    return [f"{prefix}{'.'.join(map(str, loc))}: {message}" if loc else prefix + message
            for loc, message in pydantic_problems(exc)]


REASON_MAX = 1000  # characters: a sentence or a ticket link, never a file (every page shows it)


def bounded_reason(reason: str) -> str:
    """The reason, stripped; Invalid when longer than ``REASON_MAX``."""
    reason = (reason or "").strip()
    if len(reason) > REASON_MAX:
        raise Invalid("the reason is too long",
                      [f"reason: at most {REASON_MAX} characters ({len(reason)} given)"])
    return reason


def require_reason(reason: str) -> str:
    """Every change the audit log records says why; the reason, stripped."""
    reason = bounded_reason(reason)
    if not reason:
        raise Invalid("a reason is required", ["reason: must not be empty"])
    return reason
