"""What importing the daemon costs, and how much of it is the TLS stack (issue 13, DESIGN §9).

Each figure comes from a fresh child process that does what `twistd -n btu` does before it builds
the service: parse `tap.Options` for a configuration (which closes the TLS gate, tls_gate.py, when
that configuration needs no TLS, then installs the reactor), then import `btu_twisted.daemon`,
whose imports reach every service. It reports VmRSS and the memory tracemalloc saw allocated:
- `python` alone, for the floor;
- `rediss://` (TLS needed: the gate stays open): pyOpenSSL, cryptography's Rust bindings and
  service_identity are loaded, as they were for every configuration before the gate;
- `redis://` + MariaDB over TCP: pyOpenSSL kept out, cryptography kept (pymysql's RSA password
  exchange may need it);
- `redis://` + MariaDB on a Unix socket: both kept out.
With the gate open it also prints, for the first import of pyOpenSSL and of cryptography's Rust
bindings, the chain of modules that pulled it in.

Run from the repository root: `.venv/bin/python bench/bench_imports.py`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
CONFIGS = {
    "tls": {"redis_url": "rediss://127.0.0.1:6380/0", "mysql_user": "root", "mysql_database": "x"},
    "tcp": {"redis_url": "redis://127.0.0.1:6379/0", "mysql_user": "root", "mysql_database": "x"},
    "unix": {"redis_url": "redis://127.0.0.1:6379/0", "mysql_user": "root", "mysql_database": "x",
             "mysql_unix_socket": "/run/mysqld/mysqld.sock"},
}
CHILD = r"""
import json, os, sys, traceback, tracemalloc
mode, trace, config_path = sys.argv[1], sys.argv[2] == "trace", sys.argv[3]  # tracemalloc skews VmRSS

chains = {}

def watch(event, args):
    if event == "import" and args[0] in ("OpenSSL", "cryptography.hazmat.bindings._rust") and args[0] not in chains:
        chains[args[0]] = [f"{f.filename.split('site-packages/')[-1].split(os.sep + 'btu_twisted' + os.sep)[-1]}:{f.lineno}"
                           for f in traceback.extract_stack() if f.name == "<module>"][1:]

sys.addaudithook(watch)
if trace:
    tracemalloc.start()
if mode != "python":
    from btu_twisted import tap
    tap.Options().parseOptions(["--config", config_path])
    import btu_twisted.daemon  # noqa: F401
with open("/proc/self/status") as f:
    rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024
print(json.dumps({"rss": rss, "traced": tracemalloc.get_traced_memory()[0] / 1e6, "modules": len(sys.modules),
                  "chains": chains, "openssl": "OpenSSL" in sys.modules,
                  "cryptography": "cryptography.hazmat" in sys.modules}))
"""


def child(mode: str, config_path: str) -> dict:
    """VmRSS from a run without tracemalloc, traced memory from a second run with it."""
    figures = {}
    for trace in ("plain", "trace"):
        out = subprocess.run([sys.executable, "-c", CHILD, mode, trace, config_path],
                             cwd=os.path.dirname(BENCH_DIR), check=True, capture_output=True, text=True).stdout
        figures[trace] = json.loads(out.splitlines()[-1])
    return dict(figures["plain"], traced=figures["trace"]["traced"])


def main() -> None:
    sys.path.insert(0, BENCH_DIR)
    from common import banner, note, table

    banner("imports of the daemon, and what the TLS gate keeps out")
    runs = {}
    with tempfile.TemporaryDirectory(prefix="btu_bench_imports_") as directory:
        for mode in ("python", *CONFIGS):
            path = os.path.join(directory, f"{mode}.toml")
            with open(path, "w") as f:
                f.writelines(f"{key} = {json.dumps(value)}\n" for key, value in CONFIGS.get(mode, {}).items())
            runs[mode] = child(mode, path)
    rows = []
    for mode, label in (("python", "python alone"), ("tls", "rediss:// (gate open: TLS loaded)"),
                        ("tcp", "redis://, MariaDB over TCP (pyOpenSSL out)"),
                        ("unix", "redis://, MariaDB on a Unix socket (both out)")):
        r = runs[mode]
        rows.append((label, f"{r['rss']:.1f} MB", f"{r['traced']:.1f} MB", str(r["modules"]),
                     "yes" if r["openssl"] else "no", "yes" if r["cryptography"] else "no"))
    table(rows, ("process", "VmRSS", "tracemalloc (Python objects)", "modules", "pyOpenSSL",
                 "cryptography.hazmat"))
    for mode, what in (("tcp", "pyOpenSSL and what only it pulls in"),
                       ("unix", "pyOpenSSL + cryptography")):
        note(f"{what}: {runs['tls']['rss'] - runs[mode]['rss']:.1f} MB of VmRSS, "
             f"{runs['tls']['traced'] - runs[mode]['traced']:.1f} MB traced")
    note(f"imports: {runs['unix']['rss'] - runs['python']['rss']:.1f} MB of VmRSS over python alone "
         f"with the gate closed, {runs['tls']['rss'] - runs['python']['rss']:.1f} MB with TLS")
    for name, chain in runs["tls"]["chains"].items():
        note(f"first import of {name} (gate open): " + " -> ".join(chain))


if __name__ == "__main__":
    main()
