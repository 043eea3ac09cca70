"""``slb-admin ctl``: the REST API for deploy scripts, with exit codes a script can trust.

    slb-admin ctl pull-out GROUP ADDRESS --reason "release 42" --wait [--timeout 60]
    slb-admin ctl pull-in  GROUP ADDRESS --reason "release 42" --wait
    slb-admin ctl status   GROUP

The admin's URL comes from ``--admin`` (default ``$SLB_ADMIN_URL``, else
``http://127.0.0.1:9800``) and the token from ``--token-file`` or ``$SLB_ADMIN_TOKEN`` (never
from the command line: it would show in ``ps`` and shell history).

Exit codes: 0 done everywhere (``--wait``: every node applied it and, for a pull-out, drained
it; without ``--wait``: stored); 1 refused (the message says why: a typo, the last member
without ``--force``, a missing reason); 2 not done everywhere in time (the per-node lines say
which node and why; the change is stored and keeps being pushed); 3 the admin did not answer.
``status`` exits 0 when every node runs the desired configuration, 2 otherwise.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

DONE, REFUSED, NOT_EVERYWHERE, UNREACHABLE = 0, 1, 2, 3


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="slb-admin ctl",
                                     description="SLB admin operations for deploy scripts")
    parser.add_argument("--admin", default=os.environ.get("SLB_ADMIN_URL",
                                                          "http://127.0.0.1:9800"))
    parser.add_argument("--token-file", help="a file holding the API token "
                        "(default: $SLB_ADMIN_TOKEN)")
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("pull-out", "pull-in"):
        command = commands.add_parser(name, help=f"{name} one member of a group")
        command.add_argument("group")
        command.add_argument("address", help="ip:port")
        command.add_argument("--reason", required=True, help="kept in the audit log")
        command.add_argument("--wait", action="store_true",
                             help="until every node applied it (pull-out: and drained it)")
        command.add_argument("--timeout", type=float, default=60.0, help="seconds (60)")
        command.add_argument("--force", action="store_true",
                             help="even if no member of the group would take traffic")
    status = commands.add_parser("status", help="a group's members and every node's state")
    status.add_argument("group")
    return parser


def token_of(args: argparse.Namespace) -> str:
    if args.token_file:
        try:
            return Path(args.token_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise SystemExit(f"slb-admin ctl: cannot read {args.token_file}: "
                             f"{exc.strerror or exc}") from None
    token = os.environ.get("SLB_ADMIN_TOKEN", "").strip()
    if not token:
        raise SystemExit("slb-admin ctl: no token: set SLB_ADMIN_TOKEN or --token-file")
    return token


def main(argv: list[str] | None = None, out: Any = None) -> int:
    out = out or sys.stdout
    args = parser().parse_args(argv)
    headers = {"Authorization": f"Bearer {token_of(args)}"}
    try:
        with httpx.Client(base_url=args.admin, headers=headers,
                          timeout=getattr(args, "timeout", 30.0) + 30.0) as client:
            if args.command == "status":
                return status(client, args.group, out)
            return member_op(client, args, out)
    except httpx.HTTPError as exc:
        print(f"slb-admin ctl: the admin at {args.admin} did not answer: "
              f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return UNREACHABLE


def member_op(client: httpx.Client, args: argparse.Namespace, out: Any) -> int:
    path = (f"/api/v1/groups/{quote(args.group, safe='')}/members/"
            f"{quote(args.address, safe='')}/{args.command}")
    if args.wait:
        kind = "drained" if args.command == "pull-out" else f"{min(args.timeout, 300):g}"
        path += f"?wait={kind}&timeout={args.timeout:g}"
    else:
        path += "?wait=0"
    reply = client.post(path, json={"reason": args.reason, "force": args.force})
    body = answer_of(reply)
    if reply.status_code >= 400:
        print(f"refused ({reply.status_code}): {body.get('message', reply.text[:200])}",
              file=sys.stderr)
        for line in body.get("details", []):
            print(f"  {line}", file=sys.stderr)
        return REFUSED
    for node in body.get("nodes", []):
        state = "applied" if node["applied"] else f"NOT applied: {node.get('error')}"
        print(f"{node['node']}: {state} (snapshot {node.get('version')})", file=out)
    for node in (body.get("drain") or {}).get("nodes", []):
        if "error" in node:
            print(f"{node['node']}: NOT drained: {node['error']}", file=out)
            continue
        counts = ", ".join(f"{member} {c['active']} in flight, {c['idle_connections']} idle"
                           for member, c in node["members"].items())
        print(f"{node['node']}: {'drained' if node['drained'] else 'NOT drained'} ({counts})",
              file=out)
    if not args.wait:
        return DONE
    return DONE if reply.status_code == 200 else NOT_EVERYWHERE


def status(client: httpx.Client, group: str, out: Any) -> int:
    reply = client.get(f"/api/v1/groups/{quote(group, safe='')}")
    body = answer_of(reply)
    if reply.status_code != 200:
        print(f"refused ({reply.status_code}): {body.get('message', reply.text[:200])}",
              file=sys.stderr)
        return REFUSED
    print(f"group {group}: {body.get('health')}", file=out)
    for member in body.get("members", []):
        held = ", ".join(member.get("held_by", [])) or "-"
        print(f"  {member['address']}  {member['state']}  held by: {held}", file=out)
    nodes = answer_of(client.get("/api/v1/nodes")).get("items", [])
    for node in nodes:
        state = "in sync" if node.get("in_sync") else f"NOT in sync: {node.get('last_error')}"
        print(f"node {node['name']} ({node['cluster']}): {state}", file=out)
    return DONE if nodes and all(n.get("in_sync") for n in nodes) else NOT_EVERYWHERE


def answer_of(reply: httpx.Response) -> dict[str, Any]:
    try:
        body = reply.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
