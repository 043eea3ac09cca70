#!/usr/bin/env bash
# `make bench`: the SLB proxy against nginx (1 worker, upstream keep-alive) on 127.0.0.1.
#
#   bash bench/run.sh [--rounds 3] [--duration 10] [--connections 50] [--direct] [--strict]
#
# Installs Debian's wrk and nginx if they are missing, then runs bench/bench.py with the
# project's venv. Results: a table on stdout and bench/out/bench-<time>.json (and
# bench-latest.json). `bash bench/run.sh --help` lists every option.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

missing=()
for tool in wrk nginx; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if ((${#missing[@]})); then
  echo "bench: installing ${missing[*]} (apt-get)" >&2
  apt-get update -qq && apt-get install -y -qq wrk nginx >/dev/null
fi
# nginx from the package may have started a system instance on :80; ours use their own ports.

if [[ ! -x .venv/bin/python || ! -x .venv/bin/slb ]]; then
  echo "bench: .venv is missing; run 'make bench' (it creates the venv first)" >&2
  exit 2
fi
exec .venv/bin/python bench/bench.py "$@"
