#!/usr/bin/env bash
# Where does a proxy spend its time per request? Two figures (bench/profiling.py):
#
# 1. py-spy: SLB (every feature of config/slb.yaml; `--target ref` for the reference proxy)
#    under wrk -c50 for --duration s; bench/out/profile-<time>.speedscope.json (open in
#    https://www.speedscope.app) and .collapsed.txt (flamegraph.pl), and the top functions by
#    own time, per line and by total time. `--native` adds the C frames (uvloop, httptools,
#    the syscalls).
# 2. strace -c -f on SLB's worker and on the reference proxy over exactly --strace-requests
#    requests (openloop at 1,000/s): system calls per request, side by side.
#
#   bash bench/profile.sh [--native] [--target slb|ref] [--path /small|/16k] [--duration 10]
#                         [--rate 250] [--top 15] [--strace-requests 5000 (0 = skip)]
#
# Installs what it needs: wrk, nginx, strace and gcc with apt-get, py-spy into .venv only
# (not a project dependency).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

source bench/setup.sh
need_tools wrk nginx strace gcc
need_venv
if [[ ! -x .venv/bin/py-spy ]]; then
  echo "bench: installing py-spy into .venv" >&2
  .venv/bin/pip install -q py-spy
fi
exec .venv/bin/python bench/bench.py --profile "$@"
