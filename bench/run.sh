#!/usr/bin/env bash
# `make bench`: SLB against the reference proxy and nginx (bench/bench.py) on 127.0.0.1.
#
#   bash bench/run.sh [--quick] [--rounds 3] [--duration 8] [--idle 10000] [--strict]
#   bash bench/run.sh --apply [comparison options]   # then also the apply bench (defaults)
#   bash bench/run.sh --apply-only [apply options]   # only the apply bench
#
# Installs Debian's wrk, nginx and gcc if they are missing, then runs bench/bench.py with the
# project's venv. Results: a table on stdout and bench/out/bench-<time>.json (and
# bench-latest.json). `bash bench/run.sh --help` lists every option.
#
# The apply bench (bench/apply_bench.py, about 90 s): how long a node takes to apply snapshots
# and pool deltas through its control API, and what 10 deltas a second cost wrk's requests/s.
# Results: bench/out/apply-<time>.json (and apply-latest.json);
# `bash bench/run.sh --apply-only --help` lists its options.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

source bench/setup.sh
need_tools wrk nginx gcc  # gcc builds bench/openloop.c, the open-loop generator
need_venv

if [[ "${1:-}" == "--apply-only" ]]; then
  shift
  exec .venv/bin/python bench/apply_bench.py "$@"
fi
apply=0
args=()
for arg in "$@"; do
  if [[ "$arg" == "--apply" ]]; then apply=1; else args+=("$arg"); fi
done
if ((!apply)); then
  exec .venv/bin/python bench/bench.py "${args[@]}"
fi
status=0
.venv/bin/python bench/bench.py "${args[@]}" || status=$?
if ((status == 0 || status == 3)); then  # 3: --strict and the target missed; still measure
  echo
  .venv/bin/python bench/apply_bench.py || { s=$?; ((status)) || status=$s; }
fi
exit "$status"
