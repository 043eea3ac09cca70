"""`.venv/bin/python bench/compiled_trial.py [--rounds 3] [--requests 50000]`: would a Cython
build of the hot modules make the request path cheaper? (issue 11's compiled-build question)

Theory of operation. Two copies of this tree's ``slb/`` and ``config/`` are made in a temporary
directory: one left as it is (pure Python), one where Cython 3 compiles the request path's
modules, unchanged, into extension modules beside their ``.py`` files (Python imports an
extension before a source of the same name). ``bench/request_path.py`` (CPU microseconds per
keep-alive request on fake transports) then runs in each copy, interleaved round by round, and
the minimum and median of each are printed. Nothing in the working tree changes; Cython is
installed into the venv (``pip install cython==3.3.1``) the first time.

Measured on 2026-12-01 (load average 3-9): the compiled build was 25-35% *slower* (pure 13.8,
compiled 17.7 us/request, min of 3): on slotted classes CPython 3.11's specialising interpreter
reads ``self.x`` inline, while Cython's generic code goes through ``PyObject_GenericGetAttr``
(31% of the compiled run's perf samples). So the product ships pure Python; a gain would need
``cython.cclass`` classes with declared attributes, i.e. a rewrite of the hot classes.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CYTHON = "cython==3.3.1"
HOT_MODULES = ("slb/proxy/client.py", "slb/proxy/upstream.py", "slb/proxy/relay.py",
               "slb/proxy/head.py", "slb/proxy/forward.py", "slb/proxy/rules.py",
               "slb/proxy/actions.py", "slb/proxy/exchange.py", "slb/proxy/router.py",
               "slb/proxy/flow.py", "slb/proxy/fields.py", "slb/proxy/accesslog.py",
               "slb/balancing/balancer.py", "slb/balancing/pool.py",
               "slb/balancing/member.py", "slb/balancing/outlier.py",
               "slb/balancing/hashing.py", "slb/metrics.py")


def copy_tree(target: Path) -> Path:
    for part in ("slb", "config"):
        shutil.copytree(ROOT / part, target / part,
                        ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    return target


def compile_hot(tree: Path) -> None:
    if subprocess.run([sys.executable, "-c", "import Cython"], capture_output=True).returncode:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", CYTHON], check=True)
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    # language_level 3, binding (introspection as in Python), annotations not C types: the
    # same semantics as the pure run, so the figure compares interpreters, not programs
    subprocess.run([sys.executable, "-m", "cython", "-3", "-X", "binding=True",
                    "-X", "annotation_typing=False", *HOT_MODULES], cwd=tree, check=True)
    include = sysconfig.get_paths()["include"]
    for module in HOT_MODULES:
        source = tree / module.replace(".py", ".c")
        subprocess.run(["gcc", "-shared", "-fPIC", "-O2", "-g0", f"-I{include}", str(source),
                        "-o", str(tree / module.replace(".py", suffix))], check=True)


def run(tree: Path, requests: int) -> float:
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "request_path.py"),
                          "--requests", str(requests), "--repeat", "1"], cwd=tree,
                         check=True, capture_output=True, text=True).stdout
    # "request path: 14.1 us/request min, ..."
    return float(out.split("request path:")[1].split("us/request")[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=50000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="slb-compiled-") as tmp:
        pure, built = copy_tree(Path(tmp) / "pure"), copy_tree(Path(tmp) / "compiled")
        print(f"compiling {len(HOT_MODULES)} modules with Cython ...", flush=True)
        compile_hot(built)
        figures: dict[str, list[float]] = {"pure": [], "compiled": []}
        for round_ in range(args.rounds):
            for name, tree in (("pure", pure), ("compiled", built)):
                figures[name].append(run(tree, args.requests))
            print(f"round {round_ + 1}: pure {figures['pure'][-1]:.2f}, "
                  f"compiled {figures['compiled'][-1]:.2f} us/request", flush=True)
        for name, values in figures.items():
            print(f"{name:9s} min {min(values):.2f}  median {statistics.median(values):.2f} "
                  "us/request")
        ratio = min(figures["compiled"]) / min(figures["pure"])
        print(f"compiled/pure (min): {ratio:.2f}")


if __name__ == "__main__":
    main()
