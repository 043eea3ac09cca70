#!/usr/bin/env bash
# Locust against an SLB proxy on 127.0.0.1: two echoing nginx backends, `slb proxy` on a
# generated config, then locust headless with loadtest/locustfile.py; prints requests,
# failures and requests/s per endpoint from locust's JSON.
#
#   bash loadtest/run.sh [-u 20] [-r 10] [-t 10s] [-w 1] [--no-pin]
#
#   -u, --users N        simulated users (default 20)
#   -r, --spawn-rate N   users started per second (default 10)
#   -t, --run-time T     how long, as locust takes it: 30s, 2m, 1h (default 10s; at most 1h)
#   -w, --workers N      slb proxy --workers (default 1; 0 = the proxy in one process)
#   --no-pin             no taskset (default: locust on CPU 0, proxy and backends on CPU 1)
#
# Installs locust into .venv (pip) and Debian's nginx (apt-get) if they are missing. Output:
# bench/out/loadtest-<time>/ (locust.json, the configs, every process's log). Exit status:
# locust's (1 when any request failed), 2 for a setup problem.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

users=20 spawn_rate=10 run_time=10s workers=1 pin=1
while (($#)); do
  case "$1" in
    -u|--users) users=${2:?}; shift 2 ;;
    -r|--spawn-rate) spawn_rate=${2:?}; shift 2 ;;
    -t|--run-time) run_time=${2:?}; shift 2 ;;
    -w|--workers) workers=${2:?}; shift 2 ;;
    --no-pin) pin=0; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "loadtest: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
done
for value in "$users" "$spawn_rate" "$workers"; do
  [[ "$value" =~ ^[0-9]+$ ]] || { echo "loadtest: '$value' is not a number" >&2; exit 2; }
done
if [[ "$run_time" =~ ^([0-9]+)(s|m|h)?$ ]]; then
  case "${BASH_REMATCH[2]}" in
    h) seconds=$((BASH_REMATCH[1] * 3600)) ;;
    m) seconds=$((BASH_REMATCH[1] * 60)) ;;
    *) seconds=${BASH_REMATCH[1]} ;;
  esac
else
  echo "loadtest: --run-time '$run_time': expected e.g. 10s, 2m or 1h" >&2; exit 2
fi
if ((users < 1 || spawn_rate < 1 || seconds < 1 || seconds > 3600)); then
  echo "loadtest: users and spawn rate must be >= 1, run time 1s..1h" >&2; exit 2
fi

PY=.venv/bin/python
if [[ ! -x $PY || ! -x .venv/bin/slb ]]; then
  echo "loadtest: .venv is missing; run 'make test' (or 'make run') once to create it" >&2
  exit 2
fi
if [[ ! -x .venv/bin/locust ]]; then
  # not a project dependency: the load generator only, never imported by the proxy or pytest
  echo "loadtest: installing locust into .venv (pip)" >&2
  .venv/bin/pip install -q locust
fi
if ! command -v nginx >/dev/null 2>&1; then
  echo "loadtest: installing nginx (apt-get)" >&2
  apt-get update -qq && apt-get install -y -qq nginx >/dev/null
fi

work="bench/out/loadtest-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$work"
work=$(cd "$work" && pwd)

proxy_cpu=() load_cpu=()
if ((pin)) && command -v taskset >/dev/null 2>&1 && (($(nproc) >= 2)); then
  # locust takes about one core by itself; the proxy and the (cheap) backends share the other
  proxy_cpu=(taskset -c 1) load_cpu=(taskset -c 0)
fi

# -- processes: each in its own session, stopped by pid (then its session) at exit
pids=()
declare -A pid_of=()
cleanup() {
  local pid
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$pid" 2>/dev/null || true  # whatever is left of its session
    wait "$pid" 2>/dev/null || true
  done
  pids=()
}
trap cleanup EXIT
trap 'echo "loadtest: interrupted, stopping" >&2; exit 130' INT TERM HUP

start() {  # start NAME CMD...: in its own session, output to $work/NAME.log
  local name=$1
  shift
  setsid "$@" </dev/null >"$work/$name.log" 2>&1 &
  pids+=($!)
  pid_of[$name]=$!
}

wait_port() {  # wait_port NAME PORT: until something accepts on 127.0.0.1:PORT (15 s at most)
  local name=$1 port=$2 pid=${pid_of[$1]}
  for _ in $(seq 150); do
    if timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port" 2>/dev/null; then
      echo "  $name pid $pid on 127.0.0.1:$port"
      return 0
    fi
    kill -0 "$pid" 2>/dev/null || { echo "loadtest: $name exited: see $work/$name.log" >&2; exit 2; }
    sleep 0.1
  done
  echo "loadtest: $name not listening on $port after 15 s: see $work/$name.log" >&2
  exit 2
}

read -r b1_port b2_port proxy_port control_port < <($PY -c '
import socket
socks = [socket.socket() for _ in range(4)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
for s in socks:
    s.close()')

echo "locust against slb: -u $users -r $spawn_rate -t $run_time, --workers $workers" \
  "$( ((${#proxy_cpu[@]})) && echo '(locust on CPU 0, proxy and backends on CPU 1)')"
echo "output: $work"

# Backends echo what they received: "<name> <method> <request uri> <content length>".
for name in b1 b2; do
  port_var="${name}_port"
  mkdir -p "$work/$name"
  cat >"$work/$name/nginx.conf" <<EOF
worker_processes 1;
pid $work/$name/nginx.pid;
error_log $work/$name/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  server_tokens off;
  keepalive_timeout 300s;
  keepalive_requests 1000000;
  default_type text/plain;
  server {
    listen 127.0.0.1:${!port_var} backlog=4096;
    location / { return 200 "$name \$request_method \$request_uri \$content_length\n"; }
  }
}
EOF
  start "$name" "${proxy_cpu[@]}" nginx -p "$work/$name" -e "$work/$name/error.log" \
    -c "$work/$name/nginx.conf" -g "daemon off;"
  wait_port "$name" "${!port_var}"
done

cat >"$work/slb.yaml" <<EOF
control: {listen: "127.0.0.1:$control_port"}
http: {drain_timeout: 1}
access_log: {enabled: false}
virtual_servers:
  - name: loadtest
    listen: "127.0.0.1:$proxy_port"
    default: true
    routes: [{match: prefix, path: /, group: backends}]
groups:
  - name: backends
    algorithm: wrr
    members: [{address: "127.0.0.1:$b1_port"}, {address: "127.0.0.1:$b2_port"}]
EOF
start slb "${proxy_cpu[@]}" .venv/bin/slb proxy -c "$work/slb.yaml" --workers "$workers" \
  --log-level warning
wait_port slb "$proxy_port"

# One request through the proxy first: a setup problem stops here, not as 100% failures.
$PY - "$proxy_port" <<'EOF' || exit 2
import http.client, sys
conn = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]), timeout=5)
try:
    conn.request("GET", "/small")
    resp = conn.getresponse()
    body = resp.read()
except OSError as exc:
    sys.exit(f"loadtest: GET /small through the proxy failed: {exc}")
finally:
    conn.close()
if resp.status != 200 or not body.startswith((b"b1 GET /small", b"b2 GET /small")):
    sys.exit(f"loadtest: GET /small through the proxy: {resp.status} {body[:100]!r}")
print(f"  check: GET /small -> {resp.status} {body.decode().strip()!r}")
EOF

echo "  locust: $seconds s of load (log: $work/locust.log)"
status=0
timeout -k 5 $((seconds + 60)) "${load_cpu[@]}" .venv/bin/locust -f loadtest/locustfile.py \
  --headless --only-summary -u "$users" -r "$spawn_rate" -t "$run_time" --stop-timeout 5 \
  --host "http://127.0.0.1:$proxy_port" --json-file "$work/locust" \
  >"$work/locust.log" 2>&1 || status=$?

if [[ ! -s "$work/locust.json" ]]; then
  echo "loadtest: locust wrote no $work/locust.json (exit $status):" >&2
  tail -20 "$work/locust.log" >&2
  exit 2
fi
for name in b1 b2 slb; do
  kill -0 "${pid_of[$name]}" 2>/dev/null \
    || echo "loadtest: $name died during the run: see $work/$name.log" >&2
done

$PY - "$work/locust.json" <<'EOF'
import json, sys

entries = json.load(open(sys.argv[1]))


def percentile(times: dict[str, int], q: float) -> float | None:
    """From locust's {rounded ms: count} histogram."""
    points = sorted((float(ms), n) for ms, n in times.items())
    total = sum(n for _, n in points)
    if not total:
        return None
    seen = 0
    for ms, n in points:
        seen += n
        if seen >= q * total:
            return ms
    return points[-1][0]


def row(name: str, reqs: int, fails: int, span: float, times: dict[str, int]) -> str:
    rps = reqs / span if span > 0 else 0.0
    p50, p95, p99 = (percentile(times, q) for q in (0.5, 0.95, 0.99))
    fmt = lambda x: "-" if x is None else f"{x:g}"  # noqa: E731
    return (f"{name:<20} {reqs:>9,} {fails:>8,} {100 * fails / max(reqs, 1):>7.2f}% "
            f"{rps:>9,.0f} {fmt(p50):>7} {fmt(p95):>7} {fmt(p99):>7}")


print()
print(f"{'endpoint':<20} {'requests':>9} {'failures':>8} {'failed':>8} {'req/s':>9} "
      f"{'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7}")
total_times: dict[str, int] = {}
for e in sorted(entries, key=lambda e: -e["num_requests"]):
    span = e["last_request_timestamp"] - e["start_time"]
    print(row(f"{e['method']} {e['name']}", e["num_requests"],
              e["num_failures"], span, e["response_times"]))
    for ms, n in e["response_times"].items():
        total_times[ms] = total_times.get(ms, 0) + n
requests = sum(e["num_requests"] for e in entries)
failures = sum(e["num_failures"] for e in entries)
span = (max(e["last_request_timestamp"] for e in entries)
        - min(e["start_time"] for e in entries)) if entries else 0.0
print(row("total", requests, failures, span, total_times))
print()
print(f"requests {requests:,}, failures {failures:,}, "
      f"{requests / span if span > 0 else 0:,.0f} requests/s over {span:.1f} s")
EOF
if ((status != 0)); then
  echo "loadtest: locust exited $status (1: some requests failed); its log: $work/locust.log" >&2
  grep -iE "error|fail" "$work/locust.log" | head -10 >&2 || true
fi
exit "$status"
