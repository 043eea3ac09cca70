#!/usr/bin/env bash
# Where does the SLB proxy spend its time per request? Runs the proxy under `py-spy record`
# while wrk drives it (default 10 s, 50 connections, ~100-byte responses), saves
# bench/out/profile-<time>.speedscope.json (open in https://www.speedscope.app) and
# bench/out/profile-<time>.collapsed.txt (flamegraph.pl), and prints the top functions by own
# and by total time.
#
#   bash bench/profile.sh [--duration 10] [--connections 50] [--rate 250] [--native] [--top 15]
#
# py-spy goes into the venv only (not a project dependency).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

for tool in wrk nginx; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "bench: installing wrk and nginx (apt-get)" >&2
    apt-get update -qq && apt-get install -y -qq wrk nginx >/dev/null
    break
  fi
done
if [[ ! -x .venv/bin/py-spy ]]; then
  echo "bench: installing py-spy into .venv" >&2
  .venv/bin/pip install -q py-spy
fi
exec .venv/bin/python bench/bench.py --profile "$@"
