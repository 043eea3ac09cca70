"""TLS termination: the SLB proxy beside nginx, same certificate, same run, on 127.0.0.1.

    .venv/bin/python bench/tls_bench.py [--duration 5] [--rounds 2]

One nginx backend serves a 100-byte file. In front of it run the SLB proxy (one process,
``--workers 0``) and nginx (one worker), both terminating TLS with the same certificate and key
(made here by ``trustme``: ECDSA P-256, then RSA 2048) and keeping upstream connections alive.
For each key type, in interleaved rounds (slb, nginx, slb, nginx):

- keep-alive: ``wrk -t1 -c50`` over https (each connection shakes hands once): requests per
  second and requests per proxy CPU-second (utime+stime from /proc), and the SLB/nginx ratio;
- full handshakes: ``openssl s_time -new`` (no session reuse) for the same duration: new TLS
  connections per second. The client is one process: both proxies face the same client limit,
  and the proxy's CPU-seconds per handshake are reported beside it.

nginx comes from Debian (``apt-get install nginx``, run here when it is missing); wrk and
openssl as well. Processes started here are stopped at the end, also on errors and Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trustme
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import (  # (bench/harness.py: the shared process helpers)
    BODY,
    HOST,
    NGINX_BACKEND,
    NGINX_HEAD,
    SLB_BIN,
    TICKS,
    WRK_SCRIPT,
    BenchError,
    Service,
    cpu_ticks,
    free_ports,
    nginx_argv,
)

NGINX_TLS_PROXY = NGINX_HEAD + """\
http {{
  access_log off;
  server_tokens off;
  keepalive_timeout 75s;
  keepalive_requests 1000;
  upstream backends {{
    server {host}:{backend};
    keepalive 64;
  }}
  server {{
    listen {host}:{port} ssl backlog=4096;
    ssl_certificate {cert};
    ssl_certificate_key {key};
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache off;
    ssl_session_tickets off;
    location / {{
      proxy_pass http://backends;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $http_host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Request-Id $request_id;
    }}
  }}
}}
"""


def ensure_tools() -> None:
    missing = [tool for tool in ("nginx", "wrk", "openssl") if shutil.which(tool) is None]
    if missing:
        print(f"installing {', '.join(missing)} from Debian", file=sys.stderr)
        subprocess.run(["apt-get", "update"], check=True)
        subprocess.run(["apt-get", "install", "-y", *missing], check=True,
                       env={"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin"})


class TlsBench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.work = Path(tempfile.mkdtemp(prefix="slb-tls-bench-"))
        self.work.chmod(0o755)  # nginx workers (user nobody) read the backend's file
        self.services: list[Service] = []
        self.ports = dict(zip(("backend", "slb", "control", "nginx"), free_ports(4),
                              strict=True))
        self.wrk_script = self.work / "report.lua"
        self.wrk_script.write_text(WRK_SCRIPT)

    def launch(self, name: str, argv: list[str], port: int) -> Service:
        service = Service(name, argv, self.work / f"{name}.log")
        service.start()
        self.services.append(service)
        service.wait_listening(port)
        time.sleep(0.2)  # nginx forks its worker after binding
        service.refresh()
        return service

    def nginx(self, name: str, conf: str, port: int) -> Service:
        d = self.work / name
        return self.launch(name, nginx_argv(d, conf.replace("{d}", str(d))), port)

    def stop(self, service: Service) -> None:
        service.stop()
        self.services.remove(service)

    def stop_all(self) -> None:
        for service in reversed(self.services):
            service.stop()
        self.services.clear()

    def start_backend(self) -> None:
        www = self.work / "www"
        www.mkdir(exist_ok=True)
        (www / "small").write_bytes(BODY)
        self.nginx("backend", NGINX_BACKEND.format(
            d="{d}", workers=1, host=HOST, port=self.ports["backend"], www=www, name="b1"),
            self.ports["backend"])

    def start_proxies(self, cert: str, key: str) -> tuple[Service, Service]:
        config = {
            "control": {"listen": f"{HOST}:{self.ports['control']}"},
            "virtual_servers": [{
                "name": "bench", "listen": f"{HOST}:{self.ports['slb']}",
                "domains": ["bench.test"], "tls": {"certificate": cert, "key": key},
                "routes": [{"path": "/", "group": "g"}]}],
            "groups": [{"name": "g", "members": [
                {"address": f"{HOST}:{self.ports['backend']}"}]}],
        }
        path = self.work / "slb.yaml"
        path.write_text(yaml.safe_dump(config))
        slb = self.launch("slb", [str(SLB_BIN), "proxy", "-c", str(path), "--workers", "0",
                                  "--log-level", "warning"], self.ports["slb"])
        nginx = self.nginx("nginx", NGINX_TLS_PROXY.format(
            d="{d}", workers=1, host=HOST, port=self.ports["nginx"],
            backend=self.ports["backend"],
            cert=cert, key=key), self.ports["nginx"])
        return slb, nginx

    def check(self, port: int, ca: str) -> None:
        done = subprocess.run(
            ["curl", "-sS", "--cacert", ca, "--resolve", f"bench.test:{port}:{HOST}",
             f"https://bench.test:{port}/small"], capture_output=True, timeout=30, check=False)
        if done.returncode != 0 or done.stdout != BODY:
            raise BenchError(f"https on {port} does not serve the file: {done.stderr!r} "
                             f"{done.stdout[:200]!r}")

    def keepalive(self, service: Service, port: int) -> dict[str, float]:
        service.refresh()
        before = cpu_ticks(service.pids)
        done = subprocess.run(
            ["wrk", "-t1", "-c50", f"-d{self.args.duration}s", "--latency", "-s",
             str(self.wrk_script), f"https://{HOST}:{port}/small"],
            capture_output=True, text=True, timeout=self.args.duration + 60, check=False)
        cpu = (cpu_ticks(service.pids) - before) / TICKS
        found = re.search(r"SLBBENCH (\{.*\})", done.stdout)
        if found is None:
            raise BenchError(f"wrk: {done.stdout} {done.stderr}")
        result = json.loads(found.group(1))
        requests = result["requests"]
        return {"rps": requests / (result["duration_us"] / 1e6),
                "per_cpu_s": requests / cpu if cpu else 0.0, "p99_ms": result["p99_us"] / 1000,
                "errors": result["connect"] + result["read"] + result["status"]}

    def handshakes(self, service: Service, port: int) -> dict[str, float]:
        service.refresh()
        before = cpu_ticks(service.pids)
        done = subprocess.run(
            ["openssl", "s_time", "-connect", f"{HOST}:{port}", "-new",
             "-time", str(self.args.duration)],
            capture_output=True, text=True, timeout=self.args.duration + 60, check=False)
        cpu = (cpu_ticks(service.pids) - before) / TICKS
        found = re.search(r"(\d+) connections in ([\d.]+)s", done.stdout)
        if found is None:
            raise BenchError(f"openssl s_time: {done.stdout} {done.stderr}")
        count, seconds = int(found.group(1)), float(found.group(2))
        wall = re.search(r"(\d+) connections in (\d+) real seconds", done.stdout)
        real = float(wall.group(2)) if wall else self.args.duration
        return {"per_s": count / real, "cpu_ms_each": 1000 * cpu / count if count else 0.0,
                "client_cpu_s": seconds}

    def run(self) -> dict[str, Any]:
        ca = trustme.CA()
        ca_file = str(self.work / "ca.pem")
        ca.cert_pem.write_to_path(ca_file)
        self.start_backend()
        report: dict[str, Any] = {}
        for label, key_type in (("ecdsa-p256", trustme.KeyType.ECDSA),
                                ("rsa-2048", trustme.KeyType.RSA)):
            leaf = ca.issue_cert("bench.test", key_type=key_type)
            cert, key = str(self.work / f"{label}.pem"), str(self.work / f"{label}-key.pem")
            Path(cert).write_bytes(b"".join(b.bytes() for b in leaf.cert_chain_pems))
            leaf.private_key_pem.write_to_path(key)
            slb, nginx = self.start_proxies(cert, key)
            try:
                for port in (self.ports["slb"], self.ports["nginx"]):
                    self.check(port, ca_file)
                runs: dict[str, dict[str, list[dict[str, float]]]] = {
                    "slb": {"keepalive": [], "handshakes": []},
                    "nginx": {"keepalive": [], "handshakes": []}}
                for _ in range(self.args.rounds):
                    for name, service in (("slb", slb), ("nginx", nginx)):
                        port = self.ports[name]
                        runs[name]["keepalive"].append(self.keepalive(service, port))
                        runs[name]["handshakes"].append(self.handshakes(service, port))
                report[label] = summarize(runs)
            finally:
                self.stop(slb)
                self.stop(nginx)
        return report


def summarize(runs: dict[str, dict[str, list[dict[str, float]]]]) -> dict[str, Any]:
    def median(name: str, kind: str, key: str) -> float:
        return round(statistics.median(r[key] for r in runs[name][kind]), 1)

    out: dict[str, Any] = {}
    for name in runs:
        out[name] = {"keepalive_rps": median(name, "keepalive", "rps"),
                     "keepalive_req_per_cpu_s": median(name, "keepalive", "per_cpu_s"),
                     "keepalive_p99_ms": median(name, "keepalive", "p99_ms"),
                     "handshakes_per_s": median(name, "handshakes", "per_s"),
                     "handshake_cpu_ms": round(statistics.median(
                         r["cpu_ms_each"] for r in runs[name]["handshakes"]), 3)}
    nginx_cpu = out["nginx"]["keepalive_req_per_cpu_s"]
    out["ratio_req_per_cpu_s"] = round(out["slb"]["keepalive_req_per_cpu_s"] / nginx_cpu, 3) \
        if nginx_cpu else None
    out["ratio_handshakes_per_s"] = round(
        out["slb"]["handshakes_per_s"] / out["nginx"]["handshakes_per_s"], 3) \
        if out["nginx"]["handshakes_per_s"] else None
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=5, help="seconds per measurement")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds per proxy")
    args = parser.parse_args()
    ensure_tools()
    bench = TlsBench(args)
    try:
        report = bench.run()
    except (BenchError, KeyboardInterrupt) as exc:
        print(f"tls bench: {exc}", file=sys.stderr)
        return 1
    finally:
        bench.stop_all()
        shutil.rmtree(bench.work, ignore_errors=True)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
