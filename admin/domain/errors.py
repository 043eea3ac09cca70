"""What the admin refuses, as one tree with one HTTP status per kind.

    AdminError (400)        a request the admin refuses
      Invalid (400)         breaks validation; ``errors`` lists every problem with its path
      NotFound (404)        no such object, version, member or operation
      Conflict (409)        a concurrent edit, a name taken, an object still in use
        LastMember (409)    would take out a group's last usable member: needs ``force``

The REST API and the web UI render these the same way and with the same status: the rule
lives here, not in the edges. A malformed request is 400 whether the body is not JSON or an
object breaks the schema, so a client has one status to handle for "fix your input".

``validation_errors`` is the admin's one formatter of pydantic errors (the data plane has its
own in ``slb.model``; they print the same ``path: message`` lines).
"""

from __future__ import annotations

from pydantic import ValidationError


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


class LastMember(Conflict):
    """Taking these members out leaves their group none to send requests to (503s): the
    operator must say so explicitly (``force``)."""


def validation_errors(exc: ValidationError, prefix: str = "") -> list[str]:
    """``path: message`` per error, ``prefix`` before each (a file name)."""
    out = []
    for error in exc.errors():
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown field"
        out.append(prefix + ".".join(str(p) for p in error["loc"]) + f": {message}")
    return out


def require_reason(reason: str) -> str:
    """Every change the audit log records says why; the reason, stripped."""
    if not reason or not reason.strip():
        raise Invalid("a reason is required", ["reason: must not be empty"])
    return reason.strip()
