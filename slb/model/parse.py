"""Validating a decoded document into a ``Config``, and the one way errors are worded.

Every problem is a ``Problem``: a location in the document and a message. Locations print as
``groups[1].members[0].address``, so `slb check` (and the admin, and the control API) can show
all of them at once, like `nginx -t` but complete. Pydantic's errors go through one formatter,
``pydantic_problems``; whoever validates with pydantic (a snapshot, a pool delta, the admin's
objects) words its errors with it.

``parse_config`` checks the references between parts (a route's group, one default per listener,
a domain on one virtual server per listener) on the raw document, so they are reported together
with the field errors rather than after those are fixed. Once every field is valid it runs the
TLS checks of ``slb.model.certs`` (files, keys, expiry, names).
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from slb.model.certs import tls_problems
from slb.model.hosts import bare_host
from slb.model.schema import Config

Location = tuple[str | int, ...]
Problem = tuple[Location, str]


class ConfigErrors(ValueError):
    """Every problem found in one configuration, each with its location."""

    def __init__(self, errors: list[Problem]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{format_location(loc)}: {msg}" for loc, msg in errors))

    def lines(self) -> list[str]:
        return [format_problem(problem) for problem in self.errors]


def format_location(loc: Location) -> str:
    """('groups', 1, 'members', 0, 'address') -> 'groups[1].members[0].address'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


def format_problem(problem: Problem) -> str:
    loc, message = problem
    return f"{format_location(loc)}: {message}" if loc else message


def pydantic_problems(exc: ValidationError) -> list[Problem]:
    """Pydantic's errors as problems: locations without validator tags, short messages."""
    return [(tuple(part for part in error["loc"] if not _is_pydantic_tag(part)),
             _pydantic_message(error))
            for error in exc.errors()]


def _pydantic_message(error: Any) -> str:
    kind = error["type"]
    # a model says extra_forbidden, a pydantic dataclass (``Member``) the other
    if kind in ("extra_forbidden", "unexpected_keyword_argument"):
        return "unknown field"
    if kind == "missing":
        return "required field is missing"
    message = str(error["msg"])
    for prefix in ("Value error, ", "Assertion failed, "):
        if message.startswith(prefix):
            message = message[len(prefix):]
    return message


def _is_pydantic_tag(part: str | int) -> bool:
    # pydantic inserts validator names such as 'function-after[...]' into locations
    return isinstance(part, str) and ("[" in part or part.startswith("function-"))


def parse_config(data: Any) -> Config:
    """Validate a decoded document; raises ConfigErrors listing every problem."""
    if not isinstance(data, dict):
        raise ConfigErrors([((), "the configuration must be a mapping")])
    errors = cross_reference_errors(data)
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        errors += pydantic_problems(exc)
    else:
        # (files are read only once every field is valid: nothing is half-checked)
        errors += tls_problems(config)[0]
    if errors:
        raise ConfigErrors(sorted(errors, key=_location_order))
    return config


def _location_order(error: Problem) -> tuple[str, ...]:
    return tuple(f"{p:08d}" if isinstance(p, int) else p for p in error[0])


def cross_reference_errors(data: dict[str, Any]) -> list[Problem]:
    """What no single field can know: checked defensively on the raw document."""
    errors: list[Problem] = []
    groups = data.get("groups")
    names = {g.get("name") for g in groups if isinstance(g, dict)} \
        if isinstance(groups, list) else set()
    servers = data.get("virtual_servers")
    if not isinstance(servers, list):
        return errors
    control = data.get("control")
    control_listen = control.get("listen") if isinstance(control, dict) else None
    defaults: dict[str, str] = {}
    domains: dict[tuple[str, str], str] = {}
    for i, vs in enumerate(servers):
        if not isinstance(vs, dict):
            continue
        listen, name = vs.get("listen"), vs.get("name")
        if isinstance(listen, str) and listen == control_listen and not listen.endswith(":0"):
            errors.append((("virtual_servers", i, "listen"),
                           f"{listen} is already the control listener"))
        if vs.get("default") is True and isinstance(listen, str):
            if listen in defaults:
                errors.append((("virtual_servers", i, "default"),
                               f"{defaults[listen]!r} is already the default on {listen}"))
            defaults.setdefault(listen, str(name))
        for j, domain in enumerate(vs.get("domains") or []):
            if not isinstance(domain, str) or not isinstance(listen, str):
                continue
            normal = bare_host(domain)
            owner = domains.setdefault((listen, normal), str(name))
            if owner != str(name):
                errors.append((("virtual_servers", i, "domains", j),
                               f"{normal} on {listen} already belongs to {owner!r}"))
        routes = vs.get("routes")
        for j, route in enumerate(routes if isinstance(routes, list) else []):
            group = route.get("group") if isinstance(route, dict) else None
            if isinstance(group, str) and group not in names:
                errors.append((("virtual_servers", i, "routes", j, "group"),
                               f"unknown group {group!r}"))
            errors += split_reference_errors(route, ("virtual_servers", i, "routes", j), names)
    return errors


def split_reference_errors(route: Any, loc: Location, names: set[Any]) -> list[Problem]:
    """Each group a route's ``split`` names must exist."""
    split = route.get("split") if isinstance(route, dict) else None
    errors: list[Problem] = []
    for k, share in enumerate(split if isinstance(split, list) else []):
        group = share.get("group") if isinstance(share, dict) else None
        if isinstance(group, str) and group not in names:
            errors.append(((*loc, "split", k, "group"), f"unknown group {group!r}"))
    return errors
