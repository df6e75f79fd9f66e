"""Specification of settings from outside the file: BTU_SCHEDULER_<KEY> variables, btu_scheduler_py's
names (in its TOML file and, upper-cased, in the environment), and the start-up line saying where
each setting came from."""

from __future__ import annotations

import os

from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial import unittest

from btu_twisted import environment, tap
from btu_twisted.config import ConfigError, parse
from tests.support.daemon import short_dir

MINIMAL = 'mysql_user = "u"\nmysql_database = "d"\nfrappe_site = "site.local"\n'
# btu_scheduler_py's README sample (its keys; sql_type switched to the database it can serve here).
PY_SAMPLE = """\
name = "BTU Scheduler Daemon"
environment_name = "PROD"
full_refresh_internal_secs = 30
scheduler_polling_interval=30
time_zone_string="America/New_York"
tracing_level="INFO"
startup_without_database_connections = true
disable_unix_socket = false
jobs_site_prefix="DNU_does_not_matter"
sql_type = "mariadb"
sql_database = "your_frappe_database_name"
sql_schema = "public"
sql_user = "your_mariadb_user"
sql_password = "py-pass-s3cr3t"
sql_host = "127.0.0.1"
sql_port = 3307
rq_host = "127.0.0.1"
rq_port = 11000
socket_path = "/run/btu_daemon/btu_scheduler.sock"
socket_file_group_owner = "frappe"
webserver_ip = "127.0.0.1"
webserver_port = 8000
webserver_token = "token abc:py-tok-s3cr3t"
tcp_socket_port = 8765
frappe_site = "erp.example.com"
"""


def parsed(text=MINIMAL, **environ):
    return parse(text, environ=environ)


class EnvironmentVariableTests(unittest.SynchronousTestCase):
    """BTU_SCHEDULER_<KEY> wins over the file, typed and checked like file values."""

    def test_wins_over_file(self):
        """A variable replaces the file's value of its key, and the origin says so."""
        config, warnings = parsed(MINIMAL + 'mysql_host = "file-host"\n', BTU_SCHEDULER_MYSQL_HOST="env-host")
        self.assertEqual(config.mysql_host, "env-host")
        self.assertEqual(config.origins["mysql_host"], "environment BTU_SCHEDULER_MYSQL_HOST")
        self.assertEqual(config.origins["mysql_user"], "file")
        self.assertEqual(warnings, [])

    def test_typed_like_the_key(self):
        """Integers, numbers, booleans, octal modes and id lists are read from the text."""
        config, _ = parsed(BTU_SCHEDULER_MYSQL_PORT="3307", BTU_SCHEDULER_SOCKET_IDLE_TIMEOUT_SECS="2.5",
                           BTU_SCHEDULER_STARTUP_WITHOUT_DATABASE_CONNECTIONS="yes",
                           BTU_SCHEDULER_SOCKET_MODE="0600", BTU_SCHEDULER_SOCKET_ALLOWED_UIDS="0, 1000")
        self.assertEqual((config.mysql_port, config.socket_idle_timeout_secs,
                          config.startup_without_database_connections, config.socket_mode,
                          config.socket_allowed_uids), (3307, 2.5, True, 0o600, (0, 1000)))

    def test_booleans(self):
        """true/false, 1/0, yes/no, on/off in any case."""
        for text, value in (("TRUE", True), ("0", False), ("Off", False), ("on", True)):
            config, _ = parsed(BTU_SCHEDULER_STARTUP_WITHOUT_DATABASE_CONNECTIONS=text)
            self.assertIs(config.startup_without_database_connections, value, text)

    def test_bad_value_names_the_variable(self):
        """An unusable value: the error names the variable and the key."""
        for variable, text in (("BTU_SCHEDULER_MYSQL_PORT", "abc"),
                               ("BTU_SCHEDULER_STARTUP_WITHOUT_DATABASE_CONNECTIONS", "maybe"),
                               ("BTU_SCHEDULER_SOCKET_ALLOWED_UIDS", "root")):
            error = self.assertRaises(ConfigError, parsed, **{variable: text})
            self.assertTrue(str(error).startswith(f"{variable}: "), str(error))

    def test_range_error_names_the_variable(self):
        """A value of the right type that fails a check says which variable set it."""
        error = self.assertRaises(ConfigError, parsed, BTU_SCHEDULER_MYSQL_PORT="70000")
        self.assertIn("BTU_SCHEDULER_MYSQL_PORT", str(error))
        error = self.assertRaises(ConfigError, parsed, BTU_SCHEDULER_TIME_ZONE_STRING="Mars/Base")
        self.assertIn("Mars/Base", str(error))
        self.assertIn("BTU_SCHEDULER_TIME_ZONE_STRING", str(error))

    def test_secret_not_quoted(self):
        """A bad secret value is not quoted in the error."""
        error = self.assertRaises(ConfigError, parsed, BTU_SCHEDULER_REDIS_URL="http://:redis-s3cr3t@h")
        self.assertNotIn("redis-s3cr3t", str(error))

    def test_unknown_and_empty_variables(self):
        """An unknown BTU_SCHEDULER_ variable warns; an empty one is unset; the config path and email are not keys."""
        config, warnings = parsed(MINIMAL + 'mysql_host = "file-host"\n', BTU_SCHEDULER_POLING="5",
                                  BTU_SCHEDULER_MYSQL_HOST="", BTU_SCHEDULER_CONFIG="/etc/x.toml",
                                  BTU_SCHEDULER_EMAIL_HOST_NAME="smtp")
        self.assertEqual(config.mysql_host, "file-host")
        self.assertEqual(warnings, ["unknown environment variable BTU_SCHEDULER_POLING ignored"])

    def test_every_key_has_a_variable(self):
        """Every configuration key can be set from its variable (here: every string key)."""
        from btu_twisted.config import _FIELDS

        string_keys = [key for key, f in _FIELDS.items() if str(f.type).startswith("str")
                       and key not in ("redis_url", "queue_name_template", "tracing_level", "time_zone_string",
                                       "job_builder", "schedule_file", "frappe_bench_path",
                                       "redis_tls_ca_file", "redis_tls_cert_file", "redis_tls_key_file")]
        value = "v-{}-from-the-environment".format  # long enough for http_token's minimum
        config, _ = parsed(**{f"BTU_SCHEDULER_{key.upper()}": value(key) for key in string_keys})
        for key in string_keys:
            self.assertEqual(getattr(config, key), value(key), key)

    def test_no_environment_without_environ(self):
        """parse() without environ reads the file only (the process environment is load()'s)."""
        os.environ["BTU_SCHEDULER_MYSQL_HOST"] = "from-process"
        self.addCleanup(os.environ.pop, "BTU_SCHEDULER_MYSQL_HOST")
        self.assertEqual(parse(MINIMAL)[0].mysql_host, "127.0.0.1")


class PyAliasTests(unittest.SynchronousTestCase):
    """btu_scheduler_py's names, in its file and in the environment."""

    def test_py_sample_file(self):
        """Its sample file reads with every setting mapped; its own-only keys are ignored with a reason."""
        config, warnings = parse(PY_SAMPLE)
        self.assertEqual((config.mysql_host, config.mysql_port, config.mysql_database, config.mysql_user,
                          config.mysql_password),
                         ("127.0.0.1", 3307, "your_frappe_database_name", "your_mariadb_user", "py-pass-s3cr3t"))
        self.assertEqual(config.origins["mysql_user"], "alias sql_user (file)")
        self.assertTrue(any(w.startswith("sql_schema ignored") for w in warnings), warnings)
        self.assertTrue(any(w.startswith("jobs_site_prefix ignored") for w in warnings), warnings)
        for secret in ("py-pass-s3cr3t", "py-tok-s3cr3t"):
            self.assertNotIn(secret, repr(warnings))

    def test_environment_names(self):
        """SQL_HOST, SQL_PORT, SQL_DATABASE, SQL_USER and SQL_PASSWORD set the mysql_ keys, over the file."""
        config, _ = parsed(MINIMAL + 'mysql_host = "file-host"\n', SQL_HOST="py-host", SQL_PORT="3310",
                           SQL_DATABASE="py-db", SQL_USER="py-user", SQL_PASSWORD="pw")
        self.assertEqual((config.mysql_host, config.mysql_port, config.mysql_database, config.mysql_user,
                          config.mysql_password), ("py-host", 3310, "py-db", "py-user", "pw"))
        self.assertEqual(config.origins["mysql_host"], "alias SQL_HOST (environment)")

    def test_precedence(self):
        """BTU_SCHEDULER_<KEY> over SQL_HOST over the file's mysql_host over its sql_host."""
        text = MINIMAL + 'mysql_host = "ours"\nsql_host = "theirs"\n'
        self.assertEqual(parsed(text)[0].mysql_host, "ours")
        self.assertEqual(parsed(text, SQL_HOST="py-env")[0].mysql_host, "py-env")
        self.assertEqual(parsed(text, SQL_HOST="py-env", BTU_SCHEDULER_MYSQL_HOST="btu-env")[0].mysql_host,
                         "btu-env")

    def test_alias_type_error_names_the_alias(self):
        """SQL_PORT=abc is refused, naming SQL_PORT."""
        error = self.assertRaises(ConfigError, parsed, SQL_PORT="abc")
        self.assertTrue(str(error).startswith("SQL_PORT: mysql_port:"), str(error))

    def test_postgres_refused(self):
        """sql_type postgres cannot be served: a clear error, from the file or the environment."""
        self.assertIn("sql_type", str(self.assertRaises(ConfigError, parse, PY_SAMPLE.replace(
            'sql_type = "mariadb"', 'sql_type = "postgres"'))))
        self.assertIn("SQL_TYPE", str(self.assertRaises(ConfigError, parsed, SQL_TYPE="postgres")))

    def test_channel_aliases_set_our_keys(self):
        """btu_scheduler_py's DISABLE_REDIS_RPC, DISABLE_UNIX_SOCKET and TCP_SOCKET_PORT set our keys."""
        config, warnings = parsed(DISABLE_REDIS_RPC="1", DISABLE_UNIX_SOCKET="0", TCP_SOCKET_PORT="8765")
        self.assertEqual(warnings, [])
        self.assertEqual((config.disable_redis_rpc, config.disable_unix_socket, config.tcp_socket_port),
                         (True, False, 8765))
        for name in ("DISABLE_REDIS_RPC", "DISABLE_UNIX_SOCKET", "TCP_SOCKET_PORT"):
            self.assertEqual(config.origins[name.lower()], f"alias {name} (environment)")

    def test_aliases_map_by_key_name(self):
        """Once a key exists the alias sets it: DISABLE_REDIS_RPC, DISABLE_UNIX_SOCKET (0/1 too), TCP_SOCKET_PORT."""
        keys = {"disable_redis_rpc", "disable_unix_socket", "tcp_socket_port"}
        found = environment.layers({"disable_unix_socket": 1}, {"DISABLE_REDIS_RPC": "true",
                                                                "TCP_SOCKET_PORT": "8765"}, keys)
        self.assertEqual(found.settings, {
            "disable_unix_socket": (True, "alias disable_unix_socket (file)", "disable_unix_socket"),
            "disable_redis_rpc": ("true", "alias DISABLE_REDIS_RPC (environment)", "DISABLE_REDIS_RPC"),
            "tcp_socket_port": ("8765", "alias TCP_SOCKET_PORT (environment)", "TCP_SOCKET_PORT")})

    def test_disable_tcp_socket(self):
        """btu_scheduler_py's disable_tcp_socket = true drops its tcp_socket_port (our listener is off unless set)."""
        found = environment.layers({"tcp_socket_port": 8765, "disable_tcp_socket": True}, {}, {"tcp_socket_port"})
        self.assertEqual(found.settings, {})
        self.assertIn("tcp_socket_port ignored: btu_scheduler_py's disable_tcp_socket is true", found.warnings)
        kept = environment.layers({"disable_tcp_socket": True}, {"BTU_SCHEDULER_TCP_SOCKET_PORT": "9"},
                                  {"tcp_socket_port"})
        self.assertEqual(kept.settings["tcp_socket_port"][0], "9")


class StartupLogTests(unittest.SynchronousTestCase):
    """The start-up log says where each setting came from, never a value."""

    def test_origins_logged_without_values(self):
        """makeService logs one line naming each non-default key's origin; the password's value is absent."""
        path = self.mktemp()
        with open(path, "w", encoding="utf-8") as f:
            f.write('schedule_file = "s.toml"\njob_builder = "python"\n')
        self.patch(os, "environ", {"BTU_SCHEDULER_MYSQL_PASSWORD": "env-pass-s3cr3t", "SQL_USER": "someone",
                                   "BTU_SCHEDULER_SOCKET_PATH": os.path.join(short_dir(self), "btu.sock")})
        lines = []

        def observe(event):
            lines.append(formatEvent(event) or "")

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        options = tap.Options()
        options.parseOptions(["--config", path])
        tap.makeService(options)
        settings = [line for line in lines if line.startswith("settings: ")]
        self.assertEqual(settings, ["settings: job_builder from file, mysql_password from environment "
                                    "BTU_SCHEDULER_MYSQL_PASSWORD, mysql_user from alias SQL_USER (environment), "
                                    "schedule_file from file, socket_path from environment "
                                    "BTU_SCHEDULER_SOCKET_PATH"])
        self.assertFalse(any("env-pass-s3cr3t" in line for line in lines))
        start = next(line for line in lines if line.startswith("btu_twisted "))
        socket_path = os.environ["BTU_SCHEDULER_SOCKET_PATH"]
        for part in ("job builder python", f"control channels socket {socket_path}, Redis RPC",
                     "HTTP off", f"configuration {path}"):
            self.assertIn(part, start)
