"""A Consul HTTP API double for tests (no Consul binary needed). See README.md."""

from .process import DoubleProcess, start_process
from .server import ConsulDouble
from .state import CRITICAL, PASSING, WARNING

__all__ = ["CRITICAL", "PASSING", "WARNING", "ConsulDouble", "DoubleProcess", "start_process"]
