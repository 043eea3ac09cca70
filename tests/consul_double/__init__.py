"""A Consul HTTP API double for tests (no Consul binary needed). See README.md."""

from .clock import ManualClock
from .process import DoubleProcess, start_process
from .server import ConsulDouble
from .state import CRITICAL, PASSING, WARNING

__all__ = [
    "CRITICAL", "PASSING", "WARNING", "ConsulDouble", "DoubleProcess", "ManualClock",
    "start_process",
]
