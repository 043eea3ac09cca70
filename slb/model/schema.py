"""The configuration schema: the pydantic classes of the contract, used at load time only.

A node's configuration is the same whether it comes from a YAML file (`config/slb.yaml`) or as a
JSON snapshot pushed by the admin: the names below are the contract. Validation happens here, once,
when a configuration is loaded (``slb.model.parse``); the compiled objects the proxy uses per
request never see pydantic. ``Group`` and ``Config`` carry caches (digest, content hash), all
declared and reset in ``slb.model.identity``.

Defaults cite their precedent (nginx, HAProxy, Envoy) beside them.
"""

from __future__ import annotations

import re
import socket
import ssl
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.dataclasses import dataclass

from slb.model.identity import (
    Cached,
    content_hash,
    group_digest,
    group_position,
    with_groups,
)
from slb.model.traffic import (
    HealthCheck,
    RouteTraffic,
    check_hash_key,
    destination_problem,
)

Algorithm = Literal["wrr", "least_conn", "random2", "hash", "ip_hash"]
MatchKind = Literal["exact", "prefix", "regex"]
MemberStateName = Literal["up", "down", "drain"]

KEY_WITHHELD = "(write-only: not shown)"

_HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                       r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")


def split_host_port(value: str) -> tuple[str, int]:
    """Parse ``host:port`` (``[v6]:port`` for IPv6). Raises ValueError with a short reason."""
    if not isinstance(value, str) or ":" not in value:
        raise ValueError("expected host:port")
    if value.startswith("["):
        host, sep, port_text = value[1:].partition("]:")
        if not sep or not _is_ip(socket.AF_INET6, host):
            raise ValueError(f"invalid IPv6 address in {value!r}")
    else:
        host, _, port_text = value.rpartition(":")
        if not host:
            raise ValueError("expected host:port")
        if not _is_ip(socket.AF_INET, host) and (
                not _HOSTNAME.match(host) or host.replace(".", "").isdigit()):
            raise ValueError(f"invalid host {host!r}")
    # port 0 asks the kernel for a free port: useful for tests, never for members
    if not port_text.isdigit() or not 0 <= int(port_text) < 65536:
        raise ValueError(f"invalid port {port_text!r}: expected 0-65535")
    return host, int(port_text)


def _is_ip(family: int, text: str) -> bool:
    # inet_pton is C and strict (no leading zeros tricks for v4): 30x faster than ipaddress,
    # which matters for snapshots of 100,000 members
    try:
        socket.inet_pton(family, text)
    except OSError:
        return False
    return True


def _check_address(value: str) -> str:
    split_host_port(value)
    return value


Address = Annotated[str, AfterValidator(_check_address)]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: Any) -> Any:
    """``250ms``, ``5s``, ``2m``, ``1h`` as seconds; a number is seconds already.

    Anything else that is a string is refused here with the accepted forms; other types are
    left to the field's own validation (a bool or a list gets pydantic's error).
    """
    if not isinstance(value, str):
        return value
    found = _DURATION.match(value)
    if found is None:
        try:
            return float(value)
        except ValueError:
            raise ValueError(f"invalid duration {value!r}: expected seconds or a number "
                             "with ms, s, m or h (250ms, 5s, 2m)") from None
    return float(found.group(1)) * _UNIT_SECONDS[found.group(2)]


PositiveSeconds = Annotated[float, BeforeValidator(parse_duration), Field(gt=0, le=86400)]


class _Strict(BaseModel):
    # Unknown keys are errors: a typo in a config file must not be silently ignored.
    model_config = ConfigDict(extra="forbid", frozen=True)


class Control(_Strict):
    listen: Address = "127.0.0.1:9901"
    # Bearer token required by the control API to change anything and to read the snapshot and
    # the status; None leaves it read-only. Kept out of the YAML with ``token_file`` (a file
    # holding it, as a secrets mount) or ``token_env`` (an environment variable's name): the
    # node reads either when it loads the file (``slb.node.files``). At most one of the three.
    token: str | None = None
    token_file: str | None = None
    token_env: str | None = None

    @model_validator(mode="after")
    def _one_token_source(self) -> Control:
        given = [name for name in ("token", "token_file", "token_env")
                 if getattr(self, name) is not None]
        if len(given) > 1:
            raise ValueError(f"set one of {', '.join(given)}, not several")
        return self


class AccessLog(_Strict):
    enabled: bool = False  # off by default, as Envoy; nginx logs by default
    path: str = "-"  # "-" is stderr
    format: Literal["text", "json"] = "text"  # json: one object per line, for log shippers


class LogSettings(_Strict):
    """The node's own log (not the access log): read from the node's file only, like
    ``control``; ``slb.logs`` renders it (the admin's too)."""

    format: Literal["text", "json"] = "text"  # text: one key=value line per event
    level: Literal["debug", "info", "warning", "error"] = "info"


class HttpSettings(_Strict):
    """Client-side HTTP limits and timeouts, shared by every virtual server of the node."""

    # The whole header block must arrive within this (a deadline, not an inactivity timer, so a
    # slowloris trickle cannot extend it). nginx client_header_timeout 60s; HAProxy's
    # `timeout http-request` is commonly 10s.
    header_timeout: PositiveSeconds = 10.0
    # Idle time allowed between requests on a client keep-alive connection: nginx 75s.
    keepalive_timeout: PositiveSeconds = 75.0
    # Requests served on one client connection before it is closed: nginx 1000.
    keepalive_requests: int = Field(1000, ge=1)
    # Request target longer than this: 414. nginx large_client_header_buffers 8k.
    max_uri_bytes: int = Field(8192, ge=64, le=1 << 20)
    # Header block larger than this: 431. Envoy 60 KiB.
    max_header_bytes: int = Field(61440, ge=1024, le=1 << 24)
    # More header fields than this: 431. Envoy 100, HAProxy 101.
    max_headers: int = Field(100, ge=8, le=10000)
    # A member's response head (status line and fields) larger than this: 502 and the member
    # connection closed. nginx proxy_buffer_size is 4-8 KiB, Envoy 60 KiB, HAProxy 16 KiB.
    max_response_header_bytes: int = Field(65536, ge=1024, le=1 << 24)
    # Request body larger than this: 413; 0 means no limit. nginx client_max_body_size is 1m,
    # too small for a general-purpose balancer; 100 MiB covers uploads that belong behind one.
    max_body_bytes: int = Field(100 * 1024 * 1024, ge=0)
    # Request id header added when the client did not send one (Envoy: x-request-id).
    request_id_header: str = "X-Request-Id"
    # SIGTERM: how long in-flight requests may run before the node exits anyway.
    drain_timeout: PositiveSeconds = 30.0


class Timeouts(_Strict):
    connect: PositiveSeconds = 5.0  # Envoy 5s (nginx 60s is too long to fail over)
    # Time allowed between two reads from the member, including waiting for the response head;
    # nginx proxy_read_timeout 60s.
    read: PositiveSeconds = 60.0
    # A pooled idle upstream connection is closed after this. Below the keep-alive timeout of
    # common backends (Node.js and uvicorn 5s) so the proxy, not the backend, closes it first.
    idle: PositiveSeconds = 4.0
    # A WebSocket (or other upgraded) tunnel with no traffic either way is closed after this
    # (Envoy stream_idle_timeout 5 min).
    tunnel_idle: PositiveSeconds = 300.0


class KeepAlive(_Strict):
    max_idle: int = Field(32, ge=0, le=100000)  # idle connections kept per member: nginx 32
    max_requests: int = Field(1000, ge=1)  # requests per upstream connection: nginx 1000


class Retry(_Strict):
    # Attempts per request, the first included. Connect failures always move to another member
    # (nginx proxy_next_upstream error timeout); never the same member twice per request.
    tries: int = Field(3, ge=1, le=20)
    # A reused connection that dies before any response byte is retried only for idempotent
    # methods (RFC 9110 §9.2.2), unless this is set (nginx non_idempotent).
    non_idempotent: bool = False


class PassiveHealth(_Strict):
    # Consecutive failures that eject a member (Envoy consecutive_gateway_failure 5; nginx
    # max_fails 1). A failure is what nginx counts by default: connect error or timeout, read
    # timeout, a connection lost or a malformed response; a 5xx from the member is an answer,
    # not a failure. 0 disables ejection.
    max_fails: int = Field(5, ge=0, le=1000)
    base_ejection: PositiveSeconds = 10.0  # Envoy base_ejection_time 30s, nginx fail_timeout 10s
    max_ejection: PositiveSeconds = 300.0  # Envoy max_ejection_time 300s
    # Below this percentage of usable members, balance over all of them (Envoy panic 50%).
    panic_threshold: int = Field(50, ge=0, le=100)


# Member addresses found valid: a node validates the same ones again with every delta (a
# health flip upserts 100 members; the check was 60% of the batch's validation). Bounded:
# emptied when full, so it holds at most a node's worth of addresses, never grows with churn.
_VALID_MEMBER_ADDRESSES: set[str] = set()
_VALID_MEMBER_ADDRESSES_MAX = 16384


def _check_member_address(value: str) -> str:
    if value in _VALID_MEMBER_ADDRESSES:
        return value
    if split_host_port(value)[1] == 0:
        raise ValueError("invalid port '0': expected 1-65535")
    if len(_VALID_MEMBER_ADDRESSES) >= _VALID_MEMBER_ADDRESSES_MAX:
        _VALID_MEMBER_ADDRESSES.clear()
    _VALID_MEMBER_ADDRESSES.add(value)
    return value


# A frozen pydantic dataclass with slots, not a BaseModel: the admin holds a snapshot of 100,000
# members at 10,000 groups, and a BaseModel instance carries a __dict__ and a fields-set set
# (~550 bytes each, 55 MB in all); this is ~60 bytes plus the address (issue 15). Validation,
# the JSON form (nested in a Group's dump, same keys in the same order), equality and hash on
# the three fields are the same; unknown keys are still refused (pydantic reports them as
# ``unexpected_keyword_argument``, ``parse`` says "unknown field" as for the models).
@dataclass(frozen=True, slots=True, config=ConfigDict(extra="forbid"))
class Member:
    address: Annotated[str, AfterValidator(_check_member_address)]
    weight: int = Field(1, ge=0, le=10000)  # 0 takes no traffic
    state: MemberStateName = "up"

    def to_json(self) -> dict[str, Any]:
        """The member's JSON object, as it appears inside a group's."""
        return {"address": self.address, "weight": self.weight, "state": self.state}


# -- TLS (issue 12) ---------------------------------------------------------------------------


def _check_ciphers(value: str | None) -> str | None:
    if value is not None:
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).set_ciphers(value)
        except ssl.SSLError:
            raise ValueError(f"no cipher matches the OpenSSL cipher string {value!r}") from None
    return value


class TlsSettings(_Strict):
    """Node-wide TLS defaults of every TLS listener."""

    # nginx ssl_protocols defaults to TLSv1.2 TLSv1.3; TLS 1.0 and 1.1 are deprecated (RFC 8996).
    min_version: Literal["1.2", "1.3"] = "1.2"
    # OpenSSL cipher string for TLS 1.2 (1.3 suites are not configurable here, as nginx);
    # None keeps Python's defaults.
    ciphers: Annotated[str | None, AfterValidator(_check_ciphers)] = None
    # A client must finish its handshake within this (HAProxy `timeout client` applies; Envoy
    # transport_socket_connect_timeout 15s; nginx client_header_timeout 60s covers it).
    handshake_timeout: PositiveSeconds = 10.0


class ServerTls(_Strict):
    """A virtual server's certificate: files on the node, or PEM text inside a pushed snapshot."""

    certificate: str | None = Field(None, min_length=1)  # PEM chain, leaf first
    key: str | None = Field(None, min_length=1)
    certificate_pem: str | None = Field(None, min_length=1)
    # write-only: never in a repr, a log line or the control API's view (``public_json``)
    key_pem: str | None = Field(None, min_length=1, repr=False)

    @model_validator(mode="after")
    def _one_source(self) -> ServerTls:
        files = (self.certificate, self.key)
        inline = (self.certificate_pem, self.key_pem)
        if any(files) and any(inline):
            raise ValueError("give either certificate and key (files) or certificate_pem and "
                             "key_pem (inline), not both")
        if not all(files) and not all(inline):
            raise ValueError("certificate and key (or certificate_pem and key_pem) are required")
        return self


class UpstreamTls(_Strict):
    """TLS from the proxy to a group's members."""

    enabled: bool = False
    # verify the member's certificate (chain to ``ca`` or the system store, and its name)
    verify: bool = True
    ca: str | None = Field(None, min_length=1)  # PEM file of trusted CAs; None: the system store
    # the name sent as SNI and checked in the member's certificate; None: the member's address
    server_name: str | None = Field(None, min_length=1)


class Group(Cached, _Strict):
    name: str = Field(min_length=1, max_length=200)
    algorithm: Algorithm = "wrr"
    members: list[Member] = Field(default_factory=list)
    timeouts: Timeouts = Timeouts()
    keepalive: KeepAlive = KeepAlive()
    retry: Retry = Retry()
    passive_health: PassiveHealth = PassiveHealth()
    # `hash` (consistent hashing) only: what is hashed (slb.model.traffic.HASH_KEY)
    hash_key: Annotated[str | None, AfterValidator(check_hash_key)] = None
    # active checks by the node itself; file-managed nodes only (the admin's health is the
    # source for the others): slb.node.health
    health_check: HealthCheck | None = None
    upstream_tls: UpstreamTls = UpstreamTls()

    def digest(self) -> str:
        return group_digest(self)

    @model_validator(mode="after")
    def _unique_members(self) -> Group:
        seen: set[str] = set()
        for member in self.members:
            if member.address in seen:
                raise ValueError(f"member {member.address} is listed twice")
            seen.add(member.address)
        return self

    @model_validator(mode="after")
    def _hash_key_with_hash(self) -> Group:
        if self.algorithm == "hash" and self.hash_key is None:
            raise ValueError("algorithm hash needs a hash_key (header:NAME, cookie:NAME, "
                             "client_ip or path)")
        if self.algorithm != "hash" and self.hash_key is not None:
            raise ValueError(f"hash_key is used by algorithm hash only, not {self.algorithm}")
        return self


class Route(RouteTraffic):
    match: MatchKind = "prefix"
    path: str = Field(min_length=1)
    priority: int = 0
    group: str | None = None

    @field_validator("path")
    @classmethod
    def _check_path(cls, path: str, info: ValidationInfo) -> str:
        if info.data.get("match") == "regex":
            try:
                re.compile(path)
            except re.error as exc:
                raise ValueError(f"invalid regular expression: {exc}") from None
        elif not path.startswith("/"):
            raise ValueError("must start with '/'")
        return path

    @model_validator(mode="after")
    def _one_destination(self) -> Route:
        problem = destination_problem(self)
        if problem is not None:
            raise ValueError(problem)
        return self

    def groups(self) -> list[str]:
        """The groups this route sends traffic to (none for a redirect)."""
        if self.split is not None:
            return [share.group for share in self.split]
        return [self.group] if self.group is not None else []


def _check_domain(value: str) -> str:
    name = value.lower().rstrip(".")
    bare = name[2:] if name.startswith("*.") else name
    if "*" in bare or not _HOSTNAME.match(bare):
        raise ValueError(f"invalid domain {value!r}: expected a name or *.suffix")
    return name


Domain = Annotated[str, AfterValidator(_check_domain)]


class VirtualServer(_Strict):
    name: str = Field(min_length=1, max_length=200)
    listen: Address
    domains: list[Domain] = Field(default_factory=list)
    default: bool = False
    routes: list[Route] = Field(default_factory=list)
    tls: ServerTls | None = None
    # Every request is answered 308 to https://host[:port]/same/target (port omitted when 443).
    redirect_to_https: int | None = Field(None, ge=1, le=65535)


class Config(Cached, _Strict):
    """A whole node configuration: a file's content or an admin snapshot."""

    # Monotonic version of a pushed snapshot; files may leave it at 0.
    version: int = Field(0, ge=0)
    # The identity of the admin store that made this snapshot (None: a file). Versions only
    # compare within one store: a node refuses another store's snapshot unless taken over.
    store: str | None = Field(None, max_length=64)
    control: Control = Control()
    state_dir: str | None = None
    http: HttpSettings = HttpSettings()
    access_log: AccessLog = AccessLog()
    log: LogSettings = LogSettings()
    tls: TlsSettings = TlsSettings()
    virtual_servers: list[VirtualServer] = Field(default_factory=list)
    groups: list[Group] = Field(default_factory=list)

    @field_validator("groups")
    @classmethod
    def _unique_group_names(cls, groups: list[Group]) -> list[Group]:
        _reject_duplicates("group", [g.name for g in groups])
        return groups

    @field_validator("virtual_servers")
    @classmethod
    def _unique_vs_names(cls, servers: list[VirtualServer]) -> list[VirtualServer]:
        _reject_duplicates("virtual server", [v.name for v in servers])
        return servers

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def public_json(self) -> dict[str, Any]:
        """``to_json`` without private keys: what may be shown (the control API's view)."""
        data = self.to_json()
        for vs in data["virtual_servers"]:
            if vs.get("tls") and vs["tls"].get("key_pem"):
                vs["tls"]["key_pem"] = KEY_WITHHELD
        return data

    def content_hash(self) -> str:
        """sha256 of the content: equal content, equal hash (see ``slb.model.identity``)."""
        return content_hash(self)

    def group_position(self, name: str) -> int | None:
        """Index of group ``name`` in ``groups``."""
        return group_position(self, name)

    def with_groups(self, replaced: dict[int, Group], version: int) -> Config:
        """This config with ``groups[i]`` replaced by ``replaced[i]`` (same names), in one
        copy: a pool delta of several groups."""
        return with_groups(self, replaced, version)


def _reject_duplicates(kind: str, names: list[str]) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ValueError(f"{kind} name {name!r} is used twice")
        seen.add(name)
