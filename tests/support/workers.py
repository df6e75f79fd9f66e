"""Run real RQ workers (the ``rq`` CLI installed next to this interpreter) against test Redis."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class WorkerError(RuntimeError):
    """The burst worker failed or timed out; the message includes its output."""


def rq_executable() -> str:
    """The ``rq`` script of the running virtualenv."""
    path = os.path.join(os.path.dirname(sys.executable), "rq")
    if not os.path.exists(path):
        raise WorkerError(f"no rq script next to {sys.executable}")
    return path


def worker_env(extra_pythonpath=()) -> dict:
    """Environment for a worker: PYTHONPATH = extra paths, the repo root, then the inherited one."""
    env = dict(os.environ)
    paths = [os.path.abspath(p) for p in extra_pythonpath] + [REPO_ROOT]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def run_burst_worker(redis_url: str, queues, extra_pythonpath=(), timeout: float = 60,
                     extra_args=()) -> subprocess.CompletedProcess:
    """Run ``rq worker --burst --url <redis_url> <queues...>`` until the queues are empty.

    ``redis_url`` may be a ``unix:///path/redis.sock?db=0`` URL.  Returns the CompletedProcess
    (stdout and stderr merged into ``stdout``, text); raises :class:`WorkerError` with the
    output on a non-zero exit or timeout.  Note that a job that raises does not make the worker
    exit non-zero: check the job status or its side effects.
    """
    if isinstance(queues, str):
        queues = [queues]
    cmd = [rq_executable(), "worker", "--burst", "--url", redis_url, *extra_args, *queues]
    return run_captured(cmd, worker_env(extra_pythonpath), timeout, "rq burst worker")


def run_captured(cmd: list[str], env: dict, timeout: float, what: str) -> subprocess.CompletedProcess:
    """Run `cmd` from the repository root, output merged into text ``stdout``; raises
    :class:`WorkerError` naming `what`, with the output, on a non-zero exit or a timeout."""
    proc = subprocess.Popen(cmd, env=env, cwd=REPO_ROOT, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)  # so a timeout can kill the work horse too
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        out, _ = proc.communicate()
        raise WorkerError(f"{what} timed out after {timeout}s: {cmd}\n{out}") from None
    if proc.returncode != 0:
        raise WorkerError(f"{what} exited {proc.returncode}: {cmd}\n{out}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, None)
