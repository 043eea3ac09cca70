"""Open-loop latency: build and run bench/openloop.c, a fixed-rate HTTP/1.1 load generator.

Why our own: wrk is closed-loop (a connection sends its next request only when the previous
answer is in), so when the proxy stalls the load stalls too and the stall is counted once,
not for every request that should have been sent meanwhile ("coordinated omission"). wrk2
(Gil Tene's fixed-rate wrk) is not packaged in Debian. Debian has `hey` and `bombardier`
(rate-limited, but latency counted from the actual send, so the same omission), `httperf`
(open-loop, but one new connection per session and no percentiles above the average) and
`h2load` (connection rate only, no p99.9); Python generators cannot send 20,000+ requests a
second on one core. openloop.c (about 270 lines, epoll + timerfd) counts each latency from
the request's scheduled send time; see its header.

Its own limit shows in its output: ``send_lag`` (how late requests left, their connection
being free: the generator's fault) and ``unsent``. ``run`` raises nothing on a bad figure: the
caller reports them beside the latencies.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

from harness import HOST, OUT_DIR, BenchError, pinned

SOURCE = Path(__file__).resolve().parent / "openloop.c"
BINARY = OUT_DIR / "openloop"


def build() -> Path:
    """bench/out/openloop, compiled with gcc when missing or older than its source."""
    if BINARY.exists() and BINARY.stat().st_mtime >= SOURCE.stat().st_mtime:
        return BINARY
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        raise BenchError("no C compiler for bench/openloop.c: apt-get install -y gcc")
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    done = subprocess.run([cc, "-O2", "-Wall", "-o", str(BINARY), str(SOURCE)],
                          capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise BenchError(f"building {SOURCE.name} failed:\n{done.stderr}")
    return BINARY


def run(port: int, path: str, rate: float, connections: int, seconds: float,
        warmup: float, cpu: str | None, log: Path) -> dict[str, Any]:
    """One fixed-rate run; its JSON figures with the latencies in ms (p50, p99, p99.9, max)."""
    argv = pinned([str(build()), HOST, str(port), path, f"{rate:.0f}", str(connections),
                   f"{seconds:g}", f"{warmup:g}"], cpu)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + warmup + 30,
                          check=False)
    with open(log, "a") as f:
        f.write(f"$ {' '.join(argv)}\n{done.stdout}{done.stderr}\n")
    if done.returncode != 0:
        raise BenchError(f"openloop exited {done.returncode}: {done.stderr.strip()}")
    res: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    for key in ("p50", "p90", "p99", "p999", "max", "send_lag_p99", "send_lag_p999",
                "send_lag_max"):
        res[f"{key}_ms"] = res.pop(f"{key}_us") / 1e3
    # the generator kept its schedule if every request went and nothing was left unanswered
    res["kept_up"] = res["unsent"] == 0 and res["unanswered"] == 0 and res["errors"] == 0
    return res
