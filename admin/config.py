"""Transitional, deleted at the merge: ``slb admin`` (``slb/cli.py``, owned by the slb branch,
which removes that subcommand) still imports ``admin.config.load_admin_config``. The admin's
settings are ``admin.settings``; its command is ``slb-admin`` (``admin.cli``)."""

from admin.settings import load_admin_config

__all__ = ["load_admin_config"]
