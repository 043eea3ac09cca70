"""Command line: ``slb proxy -c FILE`` runs a node, ``slb check -c FILE`` validates a file.

A bad file never starts a proxy and never prints a traceback: every problem is printed with its
location and the exit status is 1. The admin (control plane) has its own command, ``slb-admin``:
the data plane never imports it.
"""

from __future__ import annotations

import argparse
import os
import sys

from slb.errors import ConfigError
from slb.logs import LEVELS, setup_logging
from slb.node.files import certificate_warnings, ignored_keys, load_config_file, summary


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="slb", description="SLB software load balancer")
    commands = parser.add_subparsers(dest="command", required=True)
    proxy = commands.add_parser("proxy", help="run the proxy in the foreground")
    proxy.add_argument("-c", "--config", required=True, help="configuration file (YAML)")
    proxy.add_argument("-w", "--workers", type=int, default=os.cpu_count() or 1,
                       help="worker processes sharing the listeners (default: one per core); "
                            "0 runs the proxy in the supervising process itself")
    proxy.add_argument("--log-level", default=None, choices=LEVELS,
                       help="overrides the file's log.level (default: info)")
    check = commands.add_parser("check", help="validate a configuration file, like nginx -t")
    check.add_argument("-c", "--config", required=True, help="configuration file (YAML)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "check":
        return check(args.config)
    if args.workers < 0:
        print("slb: --workers must be 0 or more", file=sys.stderr)
        return 2
    return proxy(args.config, args.workers, args.log_level)


def check(path: str) -> int:
    try:
        config = load_config_file(path)
    except ConfigError as exc:
        for line in exc.lines:
            print(line, file=sys.stderr)
        count = len(exc.lines)
        print(f"{path}: configuration is invalid ({count} error{'s' if count > 1 else ''})",
              file=sys.stderr)
        return 1
    for key in ignored_keys(config):
        print(f"{path}: {key}: warning: ignored: without virtual_servers this node is managed by "
              f"the admin, whose snapshot sets {key}", file=sys.stderr)
    for line in certificate_warnings(config):
        print(f"{path}: warning: {line}", file=sys.stderr)
    print(f"{path}: configuration is valid: {summary(config)}")
    return 0


def proxy(path: str, workers: int, log_level: str | None = None) -> int:
    import uvloop

    from slb.gcpause import desynchronise
    from slb.node.node import run_node

    try:
        local = load_config_file(path)  # fail before anything starts
        setup_logging(local.log.format, log_level or local.log.level)
        desynchronise()  # not in step with the other nodes' collections (slb.gcpause)
        uvloop.run(run_node(path, workers))
    except ConfigError as exc:
        for line in exc.lines:
            print(line, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
