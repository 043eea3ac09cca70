"""Traffic operations on routes (issue 13): a split's weights changed in one audited step.

A canary rollout is a sequence of small steps (5%, 20%, 50%, 100%): each step changes the
weights of one route's ``split`` and must take effect at once, as an activation, with the
reason in the audit log. ``set_split`` is that step: the draft route is updated (audited, from
the row version the operator saw) and activated in the same call.

It refuses when other drafts are pending: activating would publish them too, under a reason
that speaks only of the split. The operator activates or discards them first.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from admin.domain.errors import Conflict, Invalid, require_reason

if TYPE_CHECKING:
    from admin.domain.service import AdminService


def set_split(service: AdminService, route: str, weights: Any, row_version: Any, who: str,
              reason: str) -> dict[str, Any]:
    """Set the weights of ``route``'s split (``{group: weight}``, every group of the split
    named) and activate; returns the activation's version and hash."""
    reason = require_reason(reason)
    row = service.store.get("route", route)
    split = row.body.get("split")
    if not split:
        raise Invalid(f"route {route!r} has no split", ["split: the route sends to one group"])
    if not isinstance(weights, dict):
        raise Invalid("invalid weights", ['weights: expected {"group": weight, ...}'])
    groups = [share["group"] for share in split]
    errors = [f"weights.{name}: not a group of the split" for name in weights
              if name not in groups]
    errors += [f"weights.{name}: missing" for name in groups if name not in weights]
    values: dict[str, int] = {}
    for name, value in weights.items():
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 10000:
            errors.append(f"weights.{name}: expected a whole number 0-10000")
        else:
            values[name] = value
    if errors:
        raise Invalid("invalid weights", errors)
    if not str(row_version).isdigit():
        raise Invalid("the edit has no row_version", ["row_version: reload the route"])
    if service.drafts_pending():
        raise Conflict("other drafts are pending: activate or discard them before changing "
                       "a split, so that this activation publishes the split only")
    body = {**row.body, "split": [{"group": g, "weight": values[g]} for g in groups]}
    service.update("route", route, body, int(row_version), who, reason)
    return service.activate(who, reason)
