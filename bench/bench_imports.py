"""What importing the daemon costs, and how much of it is the TLS stack (issue 13, DESIGN §9).

Each figure comes from a fresh child process that imports what `twistd -n btu` imports (the tap
module, whose imports reach every service, and the epoll reactor), then reports VmRSS and the
memory tracemalloc saw allocated by imports:
- `python` alone, for the floor;
- the daemon's imports as they are: txredisapi imports `twisted.internet.ssl`, which loads
  pyOpenSSL, cryptography's Rust bindings and service_identity;
- the same with the TLS stack kept out (a prototype, measurement only): an import hook refuses
  `OpenSSL` (and, in the last row, `cryptography`, which pymysql imports for its RSA password
  exchange and redis-py probes), and a placeholder stands in for `twisted.internet.ssl` so txredisapi still imports
  (it names `ssl.ClientContextFactory` in annotations and `TLSMemoryBIOFactory` in its TLS
  endpoint). Twisted's own TLS imports are all `try ... except ImportError`, so the reactor
  starts without TLS.
It also prints, for the first import of pyOpenSSL and of cryptography's Rust bindings, the chain
of modules that pulled it in.

Run from the repository root: `.venv/bin/python bench/bench_imports.py`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
CHILD = r"""
import json, os, sys, traceback, tracemalloc
mode, trace = sys.argv[1], sys.argv[2] == "trace"  # tracemalloc's own overhead would skew VmRSS

chains = {}

def watch(event, args):
    if event == "import" and args[0] in ("OpenSSL", "cryptography.hazmat.bindings._rust") and args[0] not in chains:
        chains[args[0]] = [f"{f.filename.split('site-packages/')[-1].split(os.sep + 'perf' + os.sep)[-1]}:{f.lineno}"
                           for f in traceback.extract_stack() if f.name == "<module>"][1:]

sys.addaudithook(watch)
REFUSED = {"no-tls": ("OpenSSL",), "no-crypto": ("OpenSSL", "cryptography")}.get(mode, ())
if REFUSED:
    import importlib.abc, types

    class RefuseTLS(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in REFUSED:
                raise ImportError(f"{name}: kept out by bench_imports.py")
            return None

    sys.meta_path.insert(0, RefuseTLS())
if trace:
    tracemalloc.start()
if mode != "python":
    from twisted.internet import epollreactor
    epollreactor.install()
    if REFUSED:  # after the reactor, whose own TLS imports must see the ImportError
        for name, attribute in (("twisted.internet.ssl", "ClientContextFactory"),
                                ("twisted.protocols.tls", "TLSMemoryBIOFactory")):
            sys.modules[name] = placeholder = types.ModuleType(name)
            setattr(placeholder, attribute, object)
    import btu_twisted.tap  # noqa: F401
with open("/proc/self/status") as f:
    rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024
print(json.dumps({"rss": rss, "traced": tracemalloc.get_traced_memory()[0] / 1e6, "modules": len(sys.modules),
                  "chains": chains, "openssl": "OpenSSL" in sys.modules}))
"""


def child(mode: str) -> dict:
    """VmRSS from a run without tracemalloc, traced memory from a second run with it."""
    figures = {}
    for trace in ("plain", "trace"):
        out = subprocess.run([sys.executable, "-c", CHILD, mode, trace], cwd=os.path.dirname(BENCH_DIR),
                             check=True, capture_output=True, text=True).stdout
        figures[trace] = json.loads(out.splitlines()[-1])
    return dict(figures["plain"], traced=figures["trace"]["traced"])


def main() -> None:
    sys.path.insert(0, BENCH_DIR)
    from common import banner, note, table

    banner("imports of the daemon, and the TLS stack's share")
    runs = {mode: child(mode) for mode in ("python", "daemon", "no-tls", "no-crypto")}
    rows = []
    for mode, label in (("python", "python alone"), ("daemon", "daemon's imports, as now"),
                        ("no-tls", "... pyOpenSSL kept out (prototype)"),
                        ("no-crypto", "... pyOpenSSL and cryptography kept out (prototype)")):
        r = runs[mode]
        rows.append((label, f"{r['rss']:.1f} MB", f"{r['traced']:.1f} MB", str(r["modules"]),
                     "yes" if r["openssl"] else "no"))
    table(rows, ("process", "VmRSS", "tracemalloc (Python objects)", "modules", "OpenSSL loaded"))
    for mode, what in (("no-tls", "pyOpenSSL and what only it pulls in"),
                       ("no-crypto", "pyOpenSSL + cryptography (pymysql's RSA auth imports the latter)")):
        note(f"{what}: {runs['daemon']['rss'] - runs[mode]['rss']:.1f} MB of VmRSS, "
             f"{runs['daemon']['traced'] - runs[mode]['traced']:.1f} MB traced")
    note(f"imports: {runs['daemon']['rss'] - runs['python']['rss']:.1f} MB of VmRSS over python alone")
    for name, chain in runs["daemon"]["chains"].items():
        note(f"first import of {name}: " + " -> ".join(chain))


if __name__ == "__main__":
    main()
