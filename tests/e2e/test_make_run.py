"""``make run`` (``dev.devstack``): a port in use is one clear line and exit status 1, before
anything starts (the fixed ports of ``config/``; whoever holds them, the answer is the same)."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_a_port_in_use_is_one_line_and_exit_1_with_nothing_started() -> None:
    holder = socket.socket()
    try:
        holder.bind(("127.0.0.1", 9800))
        holder.listen()
    except OSError:
        pass  # someone holds it already (a make run): the same answer is expected
    try:
        done = subprocess.run([sys.executable, "-m", "dev.devstack"], cwd=ROOT,
                              capture_output=True, text=True, timeout=60)
    finally:
        holder.close()
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "127.0.0.1:9800 (admin" in lines[0] and "in use" in lines[0]
    assert "Traceback" not in done.stderr and "SLB is running" not in done.stdout
