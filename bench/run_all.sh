#!/usr/bin/env bash
# Run every DESIGN §9 benchmark in turn and print their tables (about 12 minutes in all, most of
# it inserting 100 000 rows and the 60-second windows). Each starts its own private redis-server /
# mariadbd on unix sockets; the system Redis and MariaDB are never touched.
#
# The peers (RQ's CronScheduler `rq cron`, rq-scheduler 0.14 `rqscheduler -i 1`) run from a venv
# of their own, created with pip on first use ($BTU_BENCH_PEERS_VENV, default
# /tmp/btu_bench_peers); without it the scripts print why the peers did not run.
#
# Usage: bench/run_all.sh            (from anywhere; uses the repository's .venv)
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
failed=()

echo "btu_twisted benchmarks (DESIGN §9) at $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(nproc) cores," \
     "$(free -g | awk '/^Mem:/ {print $2}') GiB; commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"

for script in bench_next_fire.py bench_lateness.py bench_burst.py bench_socket.py bench_rpc.py \
              bench_refresh.py bench_idle.py bench_planning.py bench_imports.py; do
    if [ ! -f "bench/$script" ]; then
        echo; echo "=== $script: missing, skipped ==="
        continue
    fi
    started=$(date +%s)
    if ! "$PY" "bench/$script"; then
        failed+=("$script")
        echo "!!! $script failed"
    fi
    echo "  ($script took $(( $(date +%s) - started )) s)"
done

if [ ${#failed[@]} -gt 0 ]; then
    echo; echo "failed: ${failed[*]}"
    exit 1
fi
