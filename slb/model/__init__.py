"""The contract between the data plane and the admin: the one slb package the admin imports.

    schema.py    the pydantic classes of a node configuration (load time only)
    parse.py     parse_config, cross-references, the one wording of validation errors
    identity.py  group digests and the content hash: every cache of the model, and its reset
    delta.py     changing an applied config: full snapshots, pool deltas, SnapshotRejected
    certs.py     certificates read, described and checked (cryptography; load time only)
    hosts.py     which virtual server and route a host and path reach (proxy and admin alike)
    traffic.py   the schema of route conditions, splits and per-route rules (issue 13)
    conditions.py route conditions compiled once, evaluated alike by proxy and admin

Nothing here knows about sockets, processes or the admin; the proxy compiles a ``Config`` into
its own objects (``slb.proxy.compile``).
"""

from slb.model.certs import (
    CertificateError,
    CertificateInfo,
    describe,
    inspect_pair,
    read_pair,
    tls_problems,
)
from slb.model.conditions import FactsView
from slb.model.delta import (
    PoolDelta,
    SnapshotRejected,
    apply_delta,
    copy_config,
    parse_delta,
    parse_snapshot,
)
from slb.model.hosts import Resolution, bare_host, resolve, route_order, route_sort_key
from slb.model.parse import (
    ConfigErrors,
    Location,
    Problem,
    cross_reference_errors,
    format_location,
    format_problem,
    parse_config,
    pydantic_problems,
)
from slb.model.schema import (
    AccessLog,
    Address,
    Algorithm,
    Config,
    Control,
    Domain,
    Group,
    HealthCheck,
    HttpSettings,
    KeepAlive,
    LogSettings,
    MatchKind,
    Member,
    MemberStateName,
    PassiveHealth,
    PositiveSeconds,
    Retry,
    Route,
    ServerTls,
    Timeouts,
    TlsSettings,
    UpstreamTls,
    VirtualServer,
    parse_duration,
    split_host_port,
)
from slb.model.traffic import (
    ROUTE_TRAFFIC_FIELDS,
    HeaderRules,
    RateLimit,
    Redirect,
    Rewrite,
    RouteTimeouts,
    RouteTraffic,
    SplitShare,
    When,
    check_cidr,
    check_hash_key,
    destination_problem,
)

__all__ = [
    "ROUTE_TRAFFIC_FIELDS",
    "AccessLog",
    "Address",
    "Algorithm",
    "CertificateError",
    "CertificateInfo",
    "Config",
    "ConfigErrors",
    "Control",
    "Domain",
    "FactsView",
    "Group",
    "HeaderRules",
    "HealthCheck",
    "HttpSettings",
    "KeepAlive",
    "Location",
    "LogSettings",
    "MatchKind",
    "Member",
    "MemberStateName",
    "PassiveHealth",
    "PoolDelta",
    "PositiveSeconds",
    "Problem",
    "RateLimit",
    "Redirect",
    "Resolution",
    "Retry",
    "Rewrite",
    "Route",
    "RouteTimeouts",
    "RouteTraffic",
    "ServerTls",
    "SnapshotRejected",
    "SplitShare",
    "Timeouts",
    "TlsSettings",
    "UpstreamTls",
    "VirtualServer",
    "When",
    "apply_delta",
    "bare_host",
    "check_cidr",
    "check_hash_key",
    "copy_config",
    "cross_reference_errors",
    "describe",
    "destination_problem",
    "format_location",
    "format_problem",
    "inspect_pair",
    "parse_config",
    "parse_delta",
    "parse_duration",
    "parse_snapshot",
    "pydantic_problems",
    "read_pair",
    "resolve",
    "route_order",
    "route_sort_key",
    "split_host_port",
    "tls_problems",
]
