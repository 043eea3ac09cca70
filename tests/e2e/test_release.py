"""The release scenario (``loadtest/release.py``), shorter: a rolling release through the admin
under steady load through two nodes, with a flapping check, Consul away for 2 s and the admin
killed and restarted, loses no request. ``make loadtest`` runs the full one (10 s outage)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_a_rolling_release_with_trouble_loses_no_request() -> None:
    done = subprocess.run([sys.executable, "loadtest/release.py", "--outage", "2", "--rate",
                           "60", "--flaps", "6"], cwd=ROOT, capture_output=True, text=True,
                          timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    requests, failures = next(line for line in done.stdout.splitlines()
                              if line.startswith("requests:")).split(", ")
    assert int(requests.split(": ")[1]) > 300, done.stdout  # the load ran throughout
    assert failures == "failures: 0", done.stdout
