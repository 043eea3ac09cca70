"""The proxies the comparison runs side by side, each in front of the same two nginx backends.

- ``slb``: ``slb proxy -c FILE``, FILE made from config/slb.yaml: every feature on (several
  virtual servers and routes, metrics, X-Forwarded-*, request id, limits, passive health).
- ``slb-log``: the same with the access log on (to a file in the run folder).
- ``ref``: bench/reference_proxy.py, a featureless uvloop + httptools proxy.
- ``nginx-best``: nginx at its best: upstream ``keepalive 256``, no added header, no
  reconnects.
- ``nginx-same``: nginx doing what SLB does: the same forwarded headers and request id, the
  same keep-alive limits (a reconnect every 1,000 requests each way).

Only what a target *is* lives here; how it is driven and measured is in harness.py and bench.py.
The config/slb.yaml translation keeps every setting of the file and only moves addresses: the
listener and the control port to free ports, every group's members to the bench backends. The
group that serves the bench's requests (route `/`) balances `wrr` over both backends, the
round-robin of the reference and of nginx, so that all of them spread requests alike.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import yaml
from harness import (
    HOST,
    NGINX_HEAD,
    ROOT,
    SLB_BIN,
    Bench,
    Service,
    free_ports,
    nginx_argv,
    slb_has_workers_option,
)

SLB_CONFIG = ROOT / "config" / "slb.yaml"
REFERENCE = Path(__file__).resolve().parent / "reference_proxy.py"
SLB_TARGETS = ("slb", "slb-log")

# nginx doing SLB's work: client keep-alive limit, requests per upstream connection, the same
# forwarded headers and a request id. nginx's `keepalive` is one idle cache per worker for all
# members; at 64 (SLB's 2 x 32) nginx still reconnected ~300 times a second at c=50, so it gets
# --nginx-keepalive (256).
NGINX_SAME = NGINX_HEAD + """\
http {{
  access_log off;
  server_tokens off;
  keepalive_timeout 75s;
  keepalive_requests {client_requests};
  upstream backends {{
{servers}
    keepalive {keepalive};
    keepalive_requests {upstream_requests};
    keepalive_timeout 4s;
  }}
  server {{
    listen {host}:{port} backlog=4096;
    location / {{
      proxy_pass http://backends;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $http_host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Forwarded-Host $http_host;
      proxy_set_header X-Request-Id $request_id;
    }}
  }}
}}
"""

# nginx at its best: nothing added, connections kept for as long as the run lasts.
NGINX_BEST = NGINX_HEAD + """\
http {{
  access_log off;
  server_tokens off;
  keepalive_timeout 300s;
  keepalive_requests 100000000;
  upstream backends {{
{servers}
    keepalive {keepalive};
    keepalive_requests 100000000;
    keepalive_timeout 300s;
  }}
  server {{
    listen {host}:{port} backlog=4096;
    location / {{
      proxy_pass http://backends;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
  }}
}}
"""

# Virtual servers added to the file's on the same listener, so that the Host lookup has several
# to choose from; no bench request matches them (wrk sends Host: 127.0.0.1:PORT).
EXTRA_VIRTUAL_SERVERS = [
    {"name": "bench-api", "domains": ["api.bench.test", "*.api.bench.test"],
     "routes": [{"match": "prefix", "path": "/v2/", "group": "web"},
                {"match": "prefix", "path": "/", "group": "api"}]},
    {"name": "bench-static", "domains": ["static.bench.test"],
     "routes": [{"match": "prefix", "path": "/img/", "group": "web"},
                {"match": "prefix", "path": "/", "group": "web"}]},
]


def slb_config(listen: str, control: str, backends: list[str], access_log: Path | None
               ) -> dict[str, Any]:
    """config/slb.yaml with its addresses moved to the bench's: every feature of the file on."""
    try:
        doc = yaml.safe_load(SLB_CONFIG.read_text())
    except (OSError, yaml.YAMLError) as exc:
        sys.exit(f"bench: cannot read {SLB_CONFIG}: {exc}")
    doc["control"]["listen"] = control
    doc.setdefault("http", {})["drain_timeout"] = 1  # stop fast at the end of the run
    doc["access_log"] = ({"enabled": True, "path": str(access_log)} if access_log
                         else {"enabled": False})
    file_vs = doc["virtual_servers"]
    for vs in file_vs:
        vs["listen"] = listen
    for extra in EXTRA_VIRTUAL_SERVERS:
        file_vs.append({**copy.deepcopy(extra), "listen": listen})
    default = next(vs for vs in file_vs if vs.get("default"))
    served = next(r["group"] for r in default["routes"] if r["path"] == "/")
    for group in doc["groups"]:
        members = group["members"]
        for i, member in enumerate(members):
            member["address"] = backends[i % len(backends)]
        if group["name"] == served:
            group["algorithm"] = "wrr"
            group["members"] = [{"address": b} for b in backends]
    return doc


class Targets:
    """Starts the comparison's proxies for ``bench``; each returns (service, port)."""

    def __init__(self, bench: Bench) -> None:
        self.bench = bench
        self.backends = [f"{HOST}:{p}" for p in bench.ports.backends]
        self.has_workers = slb_has_workers_option()

    def start(self, name: str, workers: int = 1, cpu: str | bool | None = True
              ) -> tuple[Service, int]:
        """``name`` from the list above; ``cpu`` True pins it to the proxy CPU."""
        if cpu is True:
            cpu = self.bench.proxy_cpu
        label = name if workers == 1 else f"{name}-w{workers}"
        if name in SLB_TARGETS:
            return self.slb(label, name == "slb-log", workers, cpu or None)
        if name == "ref":
            if workers != 1:
                raise ValueError("the reference proxy is one process")
            return self.reference(label, cpu or None)
        if name in ("nginx-best", "nginx-same"):
            return self.nginx(label, NGINX_BEST if name == "nginx-best" else NGINX_SAME,
                              workers, cpu or None)
        raise ValueError(f"unknown target {name}")

    def slb(self, label: str, access_log: bool, workers: int, cpu: str | None
            ) -> tuple[Service, int]:
        b = self.bench
        port, control = free_ports(2)
        doc = slb_config(f"{HOST}:{port}", f"{HOST}:{control}", self.backends,
                         b.work / f"{label}-access.log" if access_log else None)
        path = b.work / f"{label}.yaml"
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        argv = [str(SLB_BIN), "proxy", "-c", str(path), "--log-level", "warning"]
        if self.has_workers:
            argv += ["--workers", str(workers)]
        return b.launch(label, argv, cpu, port), port

    def reference(self, label: str, cpu: str | None) -> tuple[Service, int]:
        (port,) = free_ports(1)
        argv = [sys.executable, str(REFERENCE), "--listen", f"{HOST}:{port}"]
        for backend in self.backends:
            argv += ["--backend", backend]
        return self.bench.launch(label, argv, cpu, port), port

    def nginx(self, label: str, template: str, workers: int, cpu: str | None
              ) -> tuple[Service, int]:
        b, a = self.bench, self.bench.args
        (port,) = free_ports(1)
        servers = "\n".join(f"    server {backend};" for backend in self.backends)
        conf = template.format(d=b.work / label, workers=workers, host=HOST, port=port,
                               servers=servers, keepalive=a.nginx_keepalive,
                               upstream_requests=a.upstream_requests,
                               client_requests=a.keepalive_requests)
        return b.launch(label, nginx_argv(b.work / label, conf), cpu, port), port
