"""What operators edit in the admin: clusters, nodes, virtual servers, routes, groups.

These are drafts until activated (``service.activate``). The proxy-side settings of a group
reuse the data plane's schema (``slb.model``), the one contract between the planes, so a setting
means the same thing in both places and is validated by the same code.

The draft classes are named ``...Draft`` where the data plane has a class of the same idea
(``slb.model.Group`` is what a node runs; ``GroupDraft`` is what an operator edits: it names its
member source and health check, which a node never sees). ``snapshots.build_snapshot`` turns
drafts into the data plane's classes.

Member state flags (``store.member_flags``) are not here: they change at once, without
activation.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from admin.domain.errors import Invalid, validation_errors
from slb.model import (
    AccessLog,
    Address,
    Algorithm,
    Domain,
    KeepAlive,
    MatchKind,
    PassiveHealth,
    Retry,
    Route,
    RouteTraffic,
    Timeouts,
    check_hash_key,
    destination_problem,
    parse_duration,
    split_host_port,
)

Kind = Literal["cluster", "node", "virtual_server", "route", "group"]
KINDS: tuple[Kind, ...] = ("cluster", "node", "virtual_server", "route", "group")
# Field limits keep one request from filling the store and every page (a name as long as a DNS
# name, lists bounded well above real use; the API also caps a body at 1 MiB).
NAME_MAX = 253
TEXT_MAX = 1000  # descriptions, as reasons (``errors.REASON_MAX``)
MEMBERS_MAX = 10000  # static members of one group
DOMAINS_MAX = 1000  # domain names of one virtual server
Name = Annotated[str, Field(min_length=1, max_length=NAME_MAX,
                            pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]


def _member_address(value: str) -> str:
    if split_host_port(value)[1] == 0:
        raise ValueError("invalid port '0': expected 1-65535")
    return value


class Strict(BaseModel):
    """Unknown fields are errors (a typo never passes silently); values never change."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Cluster(Strict):
    name: Name
    description: str = Field("", max_length=TEXT_MAX)
    # The access log of every node of the cluster (on/off, path, text|json): it reaches the
    # nodes in their snapshot; a file-managed node keeps its own file's.
    access_log: AccessLog = AccessLog()


class Node(Strict):
    name: Name
    cluster: Name
    control_url: str = Field(max_length=NAME_MAX + 16, pattern=r"^https?://[^/]+$")
    token: str | None = Field(None, max_length=4096)  # write-only: answers say ``token_set``


class VirtualServerDraft(Strict):
    name: Name
    cluster: Name
    listen: Address
    domains: list[Domain] = Field(default_factory=list, max_length=DOMAINS_MAX)
    default: bool = False
    certificate: Name | None = None  # serve TLS with this certificate (domain.certificates)


class RouteDraft(RouteTraffic):
    # where traffic goes (issue 13): the data plane's own fields and checks (RouteTraffic)
    name: Name  # e.g. "shop-api"
    virtual_server: Name
    match: MatchKind = "prefix"
    path: str = Field(min_length=1, max_length=8192)  # the proxy's max_uri_bytes default
    priority: int = 0
    group: Name | None = None

    @model_validator(mode="after")
    def _destination(self) -> RouteDraft:
        problem = destination_problem(self)
        if problem is not None:
            raise ValueError(problem)
        return self

    @field_validator("path")
    @classmethod
    def _check_path(cls, path: str, info: ValidationInfo) -> str:
        """The data plane's own rule (``slb.model.Route``): a draft is refused what its
        activation would be, when it is saved and next to its field."""
        try:
            Route.model_validate({"match": info.data.get("match", "prefix"), "path": path,
                                  "group": "-"})
        except ValidationError as exc:
            raise ValueError(exc.errors()[0]["msg"].removeprefix("Value error, ")) from None
        return path


class StaticMember(Strict):
    address: Annotated[str, AfterValidator(_member_address)]
    weight: int = Field(1, ge=0, le=10000)


class ConsulSource(Strict):
    service: str = Field(min_length=1, max_length=NAME_MAX)
    tag: str | None = Field(None, max_length=NAME_MAX)


class HttpCheck(Strict):
    """The admin's own health check of static members (Consul-backed ones use Consul's)."""

    path: str = Field("/", max_length=8192, pattern=r"^/")
    interval: Annotated[float, BeforeValidator(parse_duration), Field(gt=0, le=3600)] = 5.0
    timeout: Annotated[float, BeforeValidator(parse_duration), Field(gt=0, le=60)] = 2.0
    fails: int = Field(3, ge=1, le=100)  # consecutive failures to mark a member down
    passes: int = Field(1, ge=1, le=100)  # consecutive passes to bring it back


class GroupDraft(Strict):
    name: Name
    algorithm: Algorithm = "wrr"
    hash_key: Annotated[str | None, AfterValidator(check_hash_key)] = None  # algorithm hash
    timeouts: Timeouts = Timeouts()
    keepalive: KeepAlive = KeepAlive()
    retry: Retry = Retry()
    passive_health: PassiveHealth = PassiveHealth()
    # member source: a Consul service (with optional tag) or a static list
    consul: ConsulSource | None = None
    members: list[StaticMember] = Field(default_factory=list, max_length=MEMBERS_MAX)
    # Consul health accepted as up: passing only (default), or warning too
    health_policy: Literal["passing", "passing_or_warning"] = "passing"
    # newly discovered members take traffic at once (Consul style) or wait to be pulled in
    # (Ctrip style)
    new_members: Literal["take_traffic", "wait_for_pull_in"] = "take_traffic"
    health_check: HttpCheck | None = None


MODELS: dict[str, type[Strict]] = {
    "cluster": Cluster, "node": Node, "virtual_server": VirtualServerDraft,
    "route": RouteDraft, "group": GroupDraft,
}

# what each kind refers to: (field, kind); the one list, read by the service (an edit may not
# name a missing object, a delete may not leave a dangling name) and by activation
REFERENCES: dict[str, tuple[tuple[str, str], ...]] = {
    "node": (("cluster", "cluster"),),
    "virtual_server": (("cluster", "cluster"), ("certificate", "certificate")),
    "route": (("virtual_server", "virtual_server"), ("group", "group")),
}


def references(kind: str, body: dict[str, Any]) -> list[tuple[str, str, str]]:
    """The names ``body`` (an object of ``kind``) refers to: (field path, kind, name). A
    route's group, or each group of its split; a redirect refers to none."""
    out = [(field, target, body[field]) for field, target in REFERENCES.get(kind, ())
           if body.get(field) is not None]
    if kind == "route":
        out += [(f"split[{i}].group", "group", share["group"])
                for i, share in enumerate(body.get("split") or [])]
    return out


def route_groups(route: dict[str, Any]) -> list[str]:
    """The groups a route (draft shape) sends traffic to."""
    return [name for _, kind, name in references("route", route) if kind == "group"]


def validate(kind: str, body: Any) -> Strict:
    """``body`` as an object of ``kind``; Invalid with every problem and its path."""
    try:
        return MODELS[kind].model_validate(body)
    except ValidationError as exc:
        raise Invalid(f"invalid {kind.replace('_', ' ')}", validation_errors(exc)) from None
