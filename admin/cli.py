"""Command line of the control plane: ``slb-admin -c config/admin.yaml [run|migrate]``, and
``slb-admin ctl ...`` (``admin.ctl``), the client deploy scripts call.

``run`` (the default) runs the admin (REST API, web UI, Consul watches, pushes to nodes) in the
foreground until SIGTERM or SIGINT. ``migrate`` upgrades the configured store's schema in place
and exits (an admin also migrates the store it opens; ``migrate`` lets an operator do it before
rolling new admins onto a shared store). A bad file, an unreachable store, a store newer than
this admin or an address already in use is one clear message on stderr and exit status 1, never
a traceback. The data plane (``slb``) never imports this package.
"""

from __future__ import annotations

import argparse
import logging
import sys

from slb.errors import ConfigError
from slb.logs import setup_logging as structured_logging


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="slb-admin",
                                     description="SLB admin (control plane)")
    parser.add_argument("-c", "--config", required=True, help="admin configuration (YAML)")
    parser.add_argument("command", nargs="?", default="run", choices=["run", "migrate"],
                        help="run the admin (default), or migrate its store and exit")
    parser.add_argument("--log-level", default=None,
                        choices=["debug", "info", "warning", "error"],
                        help="overrides log.level of the admin's file (default: info)")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["ctl"]:  # the client for deploy scripts: ``admin.ctl``
        from admin import ctl

        return ctl.main(argv[1:])
    args = _parser().parse_args(argv)
    setup_logging("text", args.log_level or "info")  # until the file says otherwise
    # imported here: ``--help`` and argument errors answer without loading the web stack
    import uvloop

    from admin.domain.errors import AdminError
    from admin.main import run_admin
    from admin.settings import load_admin_config

    try:
        config = load_admin_config(args.config)
        setup_logging(config.log.format, args.log_level or config.log.level)
        if args.command == "migrate":
            return migrate_store(config.store.url)
        uvloop.run(run_admin(config))
    except AdminError as exc:  # the store unreachable
        print(f"slb-admin: {exc}", file=sys.stderr)
        return 1
    except ConfigError as exc:
        for line in exc.lines:
            print(line, file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"slb-admin: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


def setup_logging(fmt: str, level: str) -> None:
    """Structured lines (``slb.logs``), with the chattiest libraries kept to their news."""
    structured_logging(fmt, level)
    # httpx logs every request at INFO: the health checks' probes and the pushes would be most
    # of the log. The checker logs each result itself at DEBUG, and changes at INFO.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.root.level))
    logging.getLogger("alembic").setLevel(logging.WARNING)  # a line per plugin, not news


def migrate_store(target: str) -> int:
    """``slb-admin migrate``: bring the store to this admin's schema; say what was done."""
    from admin.domain.errors import StoreUnavailable
    from admin.domain.migrate import migrate, open_engine

    engine = open_engine(target)
    try:
        before, after = migrate(engine)
    except Exception as exc:
        # a database error is the store unreachable or refusing us: one line, no traceback
        if type(exc).__module__.startswith("sqlalchemy"):
            raise StoreUnavailable(f"cannot migrate the store: {str(exc).splitlines()[0]}"
                                   ) from None
        raise
    finally:
        engine.dispose()
    if before == after:
        print(f"store already at revision {after}")
    else:
        print(f"store migrated from revision {before or '(empty)'} to {after}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
