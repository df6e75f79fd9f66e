#!/usr/bin/env bash
# Run every DESIGN §9 benchmark and issue 13's figures in turn and print their tables (about 25
# minutes in all, most of it inserting 100 000 and 150 000 rows, the bursts' rounds and the
# 60-second windows). Each starts its own private redis-server /
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

# Each line: a script and its arguments.
runs=("bench_next_fire.py" "bench_lateness.py" "bench_burst.py" "bench_burst.py --schedules 10000"
      "bench_socket.py" "bench_rpc.py" "bench_refresh.py 10000 100000 150000" "bench_idle.py"
      "bench_planning.py" "bench_imports.py")
for run in "${runs[@]}"; do
    read -r script args <<< "$run"
    if [ ! -f "bench/$script" ]; then
        echo; echo "=== $script: missing, skipped ==="
        continue
    fi
    started=$(date +%s)
    # shellcheck disable=SC2086  # the arguments are words
    if ! "$PY" "bench/$script" $args; then
        failed+=("$run")
        echo "!!! $run failed"
    fi
    echo "  ($run took $(( $(date +%s) - started )) s)"
    echo "  load average: $(cut -d' ' -f1-3 /proc/loadavg)"
done

if [ ${#failed[@]} -gt 0 ]; then
    echo; echo "failed: ${failed[*]}"
    exit 1
fi
