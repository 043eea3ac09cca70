# What bench/run.sh and bench/profile.sh both need before they start, sourced by each from the
# repository root (`source bench/setup.sh`):
#
#   need_tools wrk nginx ...   installs with apt-get the ones not on PATH (package = tool name)
#   need_venv                  exits 2 unless the project's .venv holds python and slb
#
# nginx from the package may start a system instance on :80; the benches use their own ports.

need_tools() {
  local missing=() tool
  for tool in "$@"; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
  done
  if ((${#missing[@]})); then
    echo "bench: installing ${missing[*]} (apt-get)" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

need_venv() {
  if [[ ! -x .venv/bin/python || ! -x .venv/bin/slb ]]; then
    echo "bench: .venv is missing; run 'make bench' (it creates the venv first)" >&2
    exit 2
  fi
}
