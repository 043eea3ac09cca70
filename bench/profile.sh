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

missing=()
for tool in wrk nginx strace gcc; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if ((${#missing[@]})); then
  echo "bench: installing ${missing[*]} (apt-get)" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if [[ ! -x .venv/bin/python || ! -x .venv/bin/slb ]]; then
  echo "bench: .venv is missing; run 'make bench' (it creates the venv first)" >&2
  exit 2
fi
if [[ ! -x .venv/bin/py-spy ]]; then
  echo "bench: installing py-spy into .venv" >&2
  .venv/bin/pip install -q py-spy
fi
exec .venv/bin/python bench/bench.py --profile "$@"
