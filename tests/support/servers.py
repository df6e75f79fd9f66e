"""Private Redis and MariaDB servers for integration tests.

The machine may run system MariaDB (3306) and Redis (6379) services: these helpers never touch
them.  Every server started here is a child process of the test run, in its own session,
listening on a unix socket in a private temporary directory only (``port 0`` for Redis,
``--skip-networking`` for MariaDB), started with ``--no-defaults`` (MariaDB) / no config file
(Redis) so that no system configuration is read.

Most tests share one Redis and one MariaDB per test process (:func:`shared_redis`,
:func:`shared_mariadb`) and isolate themselves with :meth:`RedisServer.flush` and
:func:`fresh_database`; fault-injection tests start their own :class:`RedisServer` /
:class:`MariaDBServer` and may kill, pause or restart it.

An ``atexit`` handler SIGKILLs the process group of every server still running, so an
interrupted test run leaves no orphans (short of the test process itself being SIGKILLed).
"""

from __future__ import annotations

import atexit
import itertools
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid

import pymysql
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

REDIS_SERVER = "/usr/bin/redis-server"
MARIADBD = "/usr/sbin/mariadbd"
MARIADB_INSTALL_DB = "/usr/bin/mariadb-install-db"

#: Unix socket paths are limited to 108 bytes (sun_path); stay well below.
_MAX_SOCKET_PATH = 100

# Server options that also shape the on-disk datadir; the template cache key includes a tag for
# them so that changing them invalidates old templates.
_INNODB_OPTIONS = ("--innodb-log-file-size=8M",)
_TEMPLATE_FORMAT = "t1"

_live_servers: set["_ServerProcess"] = set()
_live_lock = threading.Lock()
_socket_dirs: list[str] = []  # short /tmp dirs made for sockets; removed at exit


class ServerStartError(RuntimeError):
    """A private server did not come up; the message includes the tail of its log."""


def _tail(path: str, lines: int = 30) -> str:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        return f"<no log at {path}: {e}>"
    text = data.decode("utf-8", "replace").splitlines()
    return "\n".join(text[-lines:])


def _kill_all_at_exit() -> None:
    with _live_lock:
        servers = list(_live_servers)
    for server in servers:
        try:
            server.kill()
        except Exception:  # pragma: no cover - best effort at interpreter exit
            pass
    for path in _socket_dirs:
        shutil.rmtree(path, ignore_errors=True)


atexit.register(_kill_all_at_exit)


class _ServerProcess:
    """Process management shared by the Redis and MariaDB wrappers."""

    name = "server"
    _stop_timeout = 10.0

    def __init__(self, base_dir: str | None = None):
        if base_dir is None:
            base_dir = tempfile.mkdtemp(prefix=f"btu_{self.name}_")
        self.base_dir = os.path.abspath(base_dir)
        os.makedirs(self.base_dir, exist_ok=True)
        sock = os.path.join(self.base_dir, f"{self.name}.sock")
        self._socket_dir_owned = None
        if len(sock.encode()) > _MAX_SOCKET_PATH:
            # trial's _trial_temp paths can be long: put the socket in a short private dir.
            self._socket_dir_owned = tempfile.mkdtemp(prefix="btu_sock_", dir="/tmp")
            _socket_dirs.append(self._socket_dir_owned)
            sock = os.path.join(self._socket_dir_owned, f"{self.name}.sock")
        self._socket_path = sock
        self.process: subprocess.Popen | None = None
        self.paused = False
        self.last_start_seconds: float | None = None

    # -- to be provided by subclasses ---------------------------------------------------------
    def _command(self) -> list[str]:
        raise NotImplementedError

    def _ready(self) -> bool:
        raise NotImplementedError

    def _log_path(self) -> str:
        raise NotImplementedError

    def _prepare(self) -> None:
        pass

    _start_timeout = 5.0

    # -- public API ---------------------------------------------------------------------------
    @property
    def socket_path(self) -> str:
        return self._socket_path

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        """Start the server and block until it answers (raises :class:`ServerStartError`)."""
        if self.is_running():
            raise RuntimeError(f"{self.name} already running (pid {self.process.pid})")
        t0 = time.monotonic()
        self._prepare()
        try:
            os.unlink(self._socket_path)  # a stale socket left by kill()
        except FileNotFoundError:
            pass
        stdout_path = os.path.join(self.base_dir, f"{self.name}.stdout")
        with open(stdout_path, "ab") as out:
            self.process = subprocess.Popen(
                self._command(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
        self.paused = False
        with _live_lock:
            _live_servers.add(self)
        deadline = t0 + self._start_timeout
        last_error: Exception | None = None
        while True:
            if self.process.poll() is not None:
                code = self.process.returncode
                self._forget()
                raise ServerStartError(
                    f"{self.name} exited with code {code} during startup; log tail "
                    f"({self._log_path()}):\n{_tail(self._log_path())}"
                )
            try:
                if self._ready():
                    break
            except Exception as e:  # noqa: BLE001 - any failure means "not yet"
                last_error = e
            if time.monotonic() > deadline:
                self.kill()
                raise ServerStartError(
                    f"{self.name} did not answer within {self._start_timeout:.0f}s "
                    f"(last error: {last_error!r}); log tail ({self._log_path()}):\n"
                    f"{_tail(self._log_path())}"
                )
            time.sleep(0.02)
        self.last_start_seconds = time.monotonic() - t0

    def stop(self) -> None:
        """Graceful stop: SIGTERM and wait; SIGKILL the process group if it lingers."""
        if not self.is_running():
            self._forget()
            return
        proc = self.process
        try:
            os.kill(proc.pid, signal.SIGTERM)
            if self.paused:
                os.kill(proc.pid, signal.SIGCONT)  # a stopped process cannot act on SIGTERM
        except ProcessLookupError:
            pass
        try:
            proc.wait(self._stop_timeout)
        except subprocess.TimeoutExpired:
            self._killpg(proc)
            proc.wait()
        self._forget()

    def kill(self) -> None:
        """SIGKILL the server's process group (simulates a crash); no clean shutdown."""
        proc = self.process
        if proc is None:
            return
        if proc.poll() is None:
            self._killpg(proc)
            proc.wait()
        self._forget()

    def pause(self) -> None:
        """SIGSTOP: the server keeps its socket open but answers nothing until resume()."""
        if not self.is_running():
            raise RuntimeError(f"{self.name} is not running")
        os.kill(self.process.pid, signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`."""
        if not self.is_running():
            raise RuntimeError(f"{self.name} is not running")
        os.kill(self.process.pid, signal.SIGCONT)
        self.paused = False

    def restart(self) -> None:
        """Graceful stop then start (same socket path)."""
        self.stop()
        self.start()

    def cleanup(self) -> None:
        """Kill the server and remove its directories."""
        self.kill()
        shutil.rmtree(self.base_dir, ignore_errors=True)
        if self._socket_dir_owned:
            shutil.rmtree(self._socket_dir_owned, ignore_errors=True)

    # -- helpers ------------------------------------------------------------------------------
    @staticmethod
    def _killpg(proc: subprocess.Popen) -> None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # start_new_session: pgid == pid
        except ProcessLookupError:
            pass
        except PermissionError:  # pragma: no cover
            proc.kill()

    def _forget(self) -> None:
        self.paused = False
        with _live_lock:
            _live_servers.discard(self)

    def __repr__(self) -> str:
        state = "running" if self.is_running() else "stopped"
        return f"<{type(self).__name__} {state} pid={self.pid} socket={self._socket_path}>"


class RedisServer(_ServerProcess):
    """A private redis-server on a unix socket.

    By default ephemeral (``--save "" --appendonly no``): data does NOT survive
    stop/kill/restart.  With ``persistent=True`` it snapshots and keeps an append-only file in
    its ``base_dir`` (like a Frappe bench's ``redis_queue``), so data survives :meth:`stop` /
    :meth:`start` and, up to the last second's writes, :meth:`kill`.
    """

    name = "redis"
    _start_timeout = 5.0

    def __init__(self, base_dir: str | None = None, persistent: bool = False):
        super().__init__(base_dir)
        self.persistent = persistent

    def _log_path(self) -> str:
        return os.path.join(self.base_dir, "redis.stdout")

    def _command(self) -> list[str]:
        if self.persistent:
            persistence = ["--save", "60 1", "--appendonly", "yes", "--appendfsync", "everysec"]
        else:
            persistence = ["--save", "", "--appendonly", "no"]
        return [
            REDIS_SERVER,
            *persistence,
            "--port", "0",
            "--unixsocket", self._socket_path,
            "--unixsocketperm", "700",
            "--daemonize", "no",
            "--dir", self.base_dir,
            "--loglevel", "notice",
        ]

    def _ready(self) -> bool:
        c = self.client(socket_timeout=0.5)
        try:
            return bool(c.ping())
        finally:
            c.close()

    @property
    def url(self) -> str:
        return f"unix://{self._socket_path}?db=0"

    def client(self, socket_timeout: float = 5.0, **kwargs) -> redis.Redis:
        """A redis-py client for this server, with socket (connect and read) timeouts.

        Retries are off by default (redis-py >= 6 otherwise retries 3 times with backoff, so a
        0.3 s timeout against a paused server would take several seconds to surface); pass
        ``retry=`` to override.
        """
        kwargs.setdefault("socket_connect_timeout", socket_timeout)
        kwargs.setdefault("retry", Retry(NoBackoff(), 0))
        return redis.Redis(
            unix_socket_path=self._socket_path, db=0, socket_timeout=socket_timeout, **kwargs
        )

    def flush(self) -> None:
        """FLUSHALL on this private server (never on any other)."""
        c = self.client()
        try:
            c.flushall()
        finally:
            c.close()


_mariadb_version: str | None = None


def mariadb_version() -> str:
    """The mariadbd version string, e.g. ``10.11.19-MariaDB-0+deb12u1``."""
    global _mariadb_version
    if _mariadb_version is None:
        out = subprocess.run(
            [MARIADBD, "--version"], capture_output=True, text=True, check=True
        ).stdout
        # "/usr/sbin/mariadbd  Ver 10.11.19-MariaDB-0+deb12u1 for debian-linux-gnu on x86_64 ..."
        parts = out.split()
        _mariadb_version = parts[parts.index("Ver") + 1] if "Ver" in parts else "unknown"
    return _mariadb_version


def mariadb_template_dir() -> str:
    """Per-user cache of an initialised (install-db'd, never started) datadir."""
    safe = "".join(ch if ch.isalnum() or ch in ".-_" else "_" for ch in mariadb_version())
    return os.path.join(
        tempfile.gettempdir(),
        f"btu_twisted_mariadb_template_{safe}_{_TEMPLATE_FORMAT}_uid{os.getuid()}",
    )


def ensure_mariadb_template() -> tuple[str, float]:
    """Create the template datadir if missing; returns (path, seconds spent creating it)."""
    template = mariadb_template_dir()
    if os.path.isdir(os.path.join(template, "mysql")):
        return template, 0.0
    t0 = time.monotonic()
    parent = os.path.dirname(template)
    work = tempfile.mkdtemp(prefix=os.path.basename(template) + ".building.", dir=parent)
    datadir = os.path.join(work, "data")
    log = os.path.join(work, "install-db.log")
    with open(log, "wb") as out:
        proc = subprocess.run(
            [
                MARIADB_INSTALL_DB,
                "--no-defaults",
                f"--datadir={datadir}",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                "--user=root",
                *_INNODB_OPTIONS,
            ],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=120,
        )
    if proc.returncode != 0:
        tail = _tail(log)
        shutil.rmtree(work, ignore_errors=True)
        raise ServerStartError(f"mariadb-install-db failed ({proc.returncode}):\n{tail}")
    try:
        # Atomic publish: concurrent test processes may race; the loser discards its copy.
        os.rename(datadir, template)
    except OSError:
        if not os.path.isdir(os.path.join(template, "mysql")):
            raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return template, time.monotonic() - t0


class MariaDBServer(_ServerProcess):
    """A private mariadbd on a unix socket, no TCP, ``--no-defaults``.

    ``root`` has an empty password (``--auth-root-authentication-method=normal``), so pymysql
    connects as root over the socket without credentials.  The datadir persists across
    :meth:`stop`/:meth:`start`/:meth:`restart` and survives :meth:`kill` (InnoDB crash
    recovery; ``innodb_flush_log_at_trx_commit=2`` writes the log to the OS at each commit, which
    is enough to survive a process crash).
    """

    name = "mariadb"
    _start_timeout = 20.0
    _stop_timeout = 20.0

    def __init__(self, base_dir: str | None = None):
        super().__init__(base_dir)
        self.datadir = os.path.join(self.base_dir, "data")
        self.template_seconds: float | None = None  # install-db time (0 when cached)
        self.copy_seconds: float | None = None

    def _log_path(self) -> str:
        return os.path.join(self.base_dir, "mariadb.err")

    def _prepare(self) -> None:
        if os.path.isdir(os.path.join(self.datadir, "mysql")):
            return
        template, self.template_seconds = ensure_mariadb_template()
        t0 = time.monotonic()
        shutil.copytree(template, self.datadir)
        self.copy_seconds = time.monotonic() - t0

    def _command(self) -> list[str]:
        return [
            MARIADBD,
            "--no-defaults",
            f"--datadir={self.datadir}",
            f"--socket={self._socket_path}",
            "--skip-networking",
            "--user=root",
            f"--pid-file={os.path.join(self.base_dir, 'mariadb.pid')}",
            f"--log-error={self._log_path()}",
            f"--tmpdir={self.base_dir}",
            "--innodb-buffer-pool-size=16M",
            *_INNODB_OPTIONS,
            "--innodb-flush-log-at-trx-commit=2",
            "--innodb-doublewrite=0",
            "--skip-log-bin",
            "--character-set-server=utf8mb4",
            "--collation-server=utf8mb4_unicode_ci",
            "--max-connections=500",
            "--performance-schema=OFF",
        ]

    def _ready(self) -> bool:
        conn = self.connect(connect_timeout=1, read_timeout=2, write_timeout=2)
        conn.close()
        return True

    def connect(self, database: str | None = None, **kwargs) -> pymysql.connections.Connection:
        """pymysql connection as root over the unix socket (autocommit, utf8mb4)."""
        params = dict(self.connection_kwargs(), database=database, autocommit=True)
        params.setdefault("connect_timeout", 5)
        params.update(kwargs)
        return pymysql.connect(**params)

    def connection_kwargs(self) -> dict:
        """Keyword arguments for ``pymysql.connect`` (no database, no autocommit)."""
        return {"unix_socket": self._socket_path, "user": "root", "password": "",
                "charset": "utf8mb4"}

    def create_database(self, name: str) -> None:
        conn = self.connect()
        try:
            with conn.cursor() as cur:
                cur.execute(
                    f"CREATE DATABASE {_quote_ident(name)} "
                    "CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
                )
        finally:
            conn.close()

    def drop_database(self, name: str) -> None:
        conn = self.connect()
        try:
            with conn.cursor() as cur:
                cur.execute(f"DROP DATABASE IF EXISTS {_quote_ident(name)}")
        finally:
            conn.close()


def _quote_ident(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


# -- shared per-process instances -------------------------------------------------------------

_shared_lock = threading.Lock()
_shared_redis: RedisServer | None = None
_shared_mariadb: MariaDBServer | None = None
_db_counter = itertools.count(1)


def _shared_cleanup(server: _ServerProcess) -> None:
    server.cleanup()  # SIGKILL is fine: the data directory is deleted anyway


def shared_redis() -> RedisServer:
    """The per-process Redis (lazily started; stopped at exit). Call ``.flush()`` in setUp."""
    global _shared_redis
    with _shared_lock:
        if _shared_redis is None or not _shared_redis.is_running():
            if _shared_redis is not None:  # a test killed it: replace it
                _shared_redis.cleanup()
            server = RedisServer(tempfile.mkdtemp(prefix="btu_shared_redis_"))
            server.start()
            atexit.register(_shared_cleanup, server)
            _shared_redis = server
        elif _shared_redis.paused:
            _shared_redis.resume()
        return _shared_redis


def shared_mariadb() -> MariaDBServer:
    """The per-process MariaDB (lazily started; stopped at exit). Use :func:`fresh_database`."""
    global _shared_mariadb
    with _shared_lock:
        if _shared_mariadb is None or not _shared_mariadb.is_running():
            if _shared_mariadb is not None:
                _shared_mariadb.cleanup()
            server = MariaDBServer(tempfile.mkdtemp(prefix="btu_shared_mariadb_"))
            server.start()
            atexit.register(_shared_cleanup, server)
            _shared_mariadb = server
        elif _shared_mariadb.paused:
            _shared_mariadb.resume()
        return _shared_mariadb


def fresh_redis() -> RedisServer:
    """The shared Redis, flushed (for use in setUp)."""
    server = shared_redis()
    server.flush()
    return server


fresh_redis_db = fresh_redis


def fresh_database(prefix: str = "btu_test", testcase=None,
                   server: MariaDBServer | None = None) -> str:
    """Create a uniquely named database holding the Frappe schema; return its name.

    Uses the shared MariaDB unless ``server`` is given.  If ``testcase`` is given (anything with
    ``addCleanup``), the database is dropped in its cleanup; otherwise call
    ``server.drop_database(name)`` yourself.
    """
    from tests.support.frappe_schema import create_schema

    if server is None:
        server = shared_mariadb()
    name = f"{prefix}_{os.getpid()}_{next(_db_counter)}_{uuid.uuid4().hex[:6]}"[:64]
    server.create_database(name)
    conn = server.connect(name)
    try:
        create_schema(conn)
    finally:
        conn.close()
    if testcase is not None:
        testcase.addCleanup(server.drop_database, name)
    return name


def use_shared_redis(testcase) -> None:
    """Give a test the shared Redis, flushed: sets `redis_server` and `redis` (a client)."""
    testcase.redis_server = shared_redis()
    testcase.redis_server.flush()
    testcase.redis = testcase.redis_server.client()
    testcase.addCleanup(testcase.redis.close)


def use_shared_servers(testcase) -> None:
    """Give a test the shared servers, fresh: `use_shared_redis`, plus `mariadb`, `database` (a new
    Frappe-shaped database) and `sql` (an autocommit connection to it)."""
    use_shared_redis(testcase)
    testcase.mariadb = shared_mariadb()
    testcase.database = fresh_database(testcase=testcase)
    testcase.sql = testcase.mariadb.connect(testcase.database)
    testcase.addCleanup(testcase.sql.close)
