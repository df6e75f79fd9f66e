"""Other RQ versions, installed side by side with the virtualenv's, for compatibility tests.

Each version lives in its own ``pip install --target`` directory under /tmp (built once, into a
temporary directory renamed into place, then reused); the virtualenv is never touched.  A process
run with ``<venv>/bin/python`` and that directory first on PYTHONPATH imports that version's
``rq``, ``redis`` and ``click`` instead of the virtualenv's.  The virtualenv's own rq (2.6.1, from
constraints.txt) needs no directory.

Each version is paired with the redis-py and click that its users run it with:

- rq 1.15.1: redis 4.5.5, click 8.1 (Frappe v15 pins ``rq~=1.15.1``, ``redis~=4.5.5``,
  ``Click~=8.1``);
- rq 1.16.2: redis 5.0.x (the redis-py current when 1.16 was), click 8.1 (rq 1.x's CLI predates
  click 8.2, which warns about its duplicated ``--serializer`` option);
- rq 2.6.1: redis 7.1.x, click 8.3, croniter 6.0 (Frappe develop pins ``rq==2.6.1``,
  ``redis~=7.1.0``, ``Click~=8.3.1``, ``croniter~=6.0.0``; rq 2.6 excludes redis 6): the
  virtualenv's own, by constraints.txt;
- rq 3.0.0: redis 8.1.x (the newest of both, which setup.py's ranges admit).

Every version from 1.15 to 3.x ships ``rq/cli/__main__.py``, so ``python -m rq.cli worker ...``
is the same command line for all of them (the ``rq`` console script is not installed with
``--target`` in a usable way: its shebang would name the venv and its imports the venv's rq).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading

import rq

from tests.support.workers import run_captured, worker_env

#: rq version -> the other requirements installed with it.
PINS = {
    "1.15.1": ("redis==4.5.5", "click>=8.1,<8.2"),
    "1.16.2": ("redis>=5.0,<5.1", "click>=8.1,<8.2"),
    "2.6.1": ("redis>=7.1,<7.2", "click>=8.3,<8.4", "croniter>=6.0,<6.1"),
    "3.0.0": ("redis>=8.1,<8.2", "click>=8.3", "croniter>=6.0"),
}
VENV_VERSION = rq.VERSION  # the virtualenv's own rq (constraints.txt); runs without a target directory
INSTALL_TIMEOUT_SECS = 300

# What pip prints when it cannot reach the package index at all (as opposed to a bad pin): its
# retry warnings, or, when it gives up without retrying (it logs the fetch errors below --quiet),
# finding no release of a package that has dozens.
_NETWORK_ERRORS = (
    "(from versions: none)",
    "NewConnectionError", "ConnectTimeoutError", "Max retries exceeded", "ReadTimeoutError",
    "Temporary failure in name resolution", "Name or service not known", "Network is unreachable",
    "Connection refused", "ProxyError", "SSLError", "connection broken by",
)

_install_lock = threading.Lock()
_unreachable: RegistryUnreachable | None = None  # once pip failed to reach the index, don't retry


class RegistryUnreachable(RuntimeError):
    """pip could not reach the package index, so a version could not be installed."""


class InstallError(RuntimeError):
    """pip reached the index but the install failed; the message includes pip's output."""


def target_dir(version: str) -> str:
    """The cache directory of rq `version` (and its redis-py) for this interpreter."""
    pin = hashlib.sha1(repr(PINS[version]).encode()).hexdigest()[:8]  # a changed pin gets a new directory
    tag = f"py{sys.version_info.major}{sys.version_info.minor}_{pin}_uid{os.getuid()}"
    return os.path.join(tempfile.gettempdir(), f"btu_twisted_rq_{version}_{tag}")


def _installed(path: str, version: str) -> bool:
    return os.path.isfile(os.path.join(path, "rq", "cli", "__main__.py")) and os.path.isdir(
        os.path.join(path, f"rq-{version}.dist-info"))


def ensure_installed(version: str) -> str | None:
    """Install rq `version` into its cache directory unless present; returns the directory.

    None for the virtualenv's own version.  Raises :class:`RegistryUnreachable` when pip cannot
    reach the index, :class:`InstallError` on any other failure.
    """
    if version == VENV_VERSION:
        return None
    global _unreachable
    final = target_dir(version)
    with _install_lock:
        if _installed(final, version):
            return final
        if _unreachable is not None:
            raise _unreachable
        work = tempfile.mkdtemp(prefix=os.path.basename(final) + ".building.",
                                dir=os.path.dirname(final))
        site = os.path.join(work, "site")
        try:
            cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                   "--no-input", "--target", site, f"rq=={version}", *PINS[version]]
            try:
                proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                      timeout=INSTALL_TIMEOUT_SECS)
            except subprocess.TimeoutExpired:  # a registry that never answers
                _unreachable = RegistryUnreachable(
                    f"pip did not finish in {INSTALL_TIMEOUT_SECS}s: {' '.join(cmd)}")
                raise _unreachable from None
            output = proc.stdout + proc.stderr
            if proc.returncode != 0:
                if any(marker in output for marker in _NETWORK_ERRORS):
                    errors = [line for line in output.splitlines() if "ERROR" in line] or [""]
                    _unreachable = RegistryUnreachable(
                        f"pip cannot reach the package index to install rq=={version} "
                        f"({errors[0].strip()})\n{output[-2000:]}")
                    raise _unreachable
                raise InstallError(f"{' '.join(cmd)} exited {proc.returncode}:\n{output[-4000:]}")
            if not _installed(site, version):
                raise InstallError(f"{' '.join(cmd)} left no rq {version} in {site}:\n{output[-4000:]}")
            try:
                os.rename(site, final)  # atomic publish; a concurrent builder may have won
            except OSError:
                if not _installed(final, version):
                    raise
            return final
        finally:
            shutil.rmtree(work, ignore_errors=True)


def pythonpath(version: str) -> list[str]:
    """Directories to put first on PYTHONPATH (before the repo root) to run rq `version`."""
    target = ensure_installed(version)
    return [] if target is None else [target]


def python_env(version: str, extra_pythonpath=(), extra_env=None) -> dict:
    """Environment for ``<venv>/bin/python`` importing rq `version`, then `extra_pythonpath`, the
    repo and the venv, with `extra_env` set."""
    env = worker_env([*pythonpath(version), *extra_pythonpath])
    env.update(extra_env or {})
    return env


def run_python(version: str, args, timeout: float = 60, extra_pythonpath=(), extra_env=None
               ) -> subprocess.CompletedProcess:
    """Run ``<venv>/bin/python *args`` with rq `version` first on the path; output merged, text.

    Raises :class:`WorkerError` (with the output) on a non-zero exit or a timeout.
    """
    return run_captured([sys.executable, *args], python_env(version, extra_pythonpath, extra_env),
                        timeout, f"rq {version}")


def run_burst_worker(version: str, redis_url: str, queues, timeout: float = 60, extra_pythonpath=(),
                     extra_env=None) -> subprocess.CompletedProcess:
    """``python -m rq.cli worker --burst --url <redis_url> <queues...>`` with rq `version`.

    As with :func:`tests.support.workers.run_burst_worker`, a job that raises does not make the
    worker exit non-zero: check the job's status or its side effects.
    """
    if isinstance(queues, str):
        queues = [queues]
    return run_python(version, ["-m", "rq.cli", "worker", "--burst", "--url", redis_url, *queues],
                      timeout=timeout, extra_pythonpath=extra_pythonpath, extra_env=extra_env)
