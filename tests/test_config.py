"""Specification of the configuration loader (Rust-compatible keys, additive keys, secrets) and log level."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from twisted.logger import Logger, globalLogPublisher
from twisted.trial import unittest

from btu_twisted import config as configuration, logs
from btu_twisted.config import SAMPLE_CONFIG, Config, ConfigError, load, parse, replace

# The Rust btu_scheduler_daemon's sample file, every key it knows, including the email ones.
RUST_SAMPLE = """\
name = "BTU Scheduler Daemon"
environment_name = "PROD"
full_refresh_internal_secs = 180
scheduler_polling_interval = 30
time_zone_string = "America/New_York"
tracing_level = "DEBUG"
startup_without_database_connections = true

mysql_user = "frappe_db_user"
mysql_password = "mysql-pass-s3cr3t"
mysql_host = "db.internal"
mysql_port = 3307
mysql_database = "_0123456789abcdef"

rq_host = "redis.internal"
rq_port = 11000

socket_path = "/tmp/btu_scheduler.sock"
socket_file_group_owner = "frappe"

webserver_ip = "10.0.0.5"
webserver_port = 8001
webserver_host_header = "erp.example.com"
webserver_token = "token api-key:tok-s3cr3t"

email_address_from = "btu@example.com"
email_host_name = "smtp.example.com"
email_host_port = 587
email_account_name = "btu@example.com"
email_account_password = "email-pass-s3cr3t"
email_when_queuing = false
"""
SECRETS = ("mysql-pass-s3cr3t", "tok-s3cr3t", "email-pass-s3cr3t")

# The smallest valid file: what the SQL source and the frappe job builder cannot do without.
MINIMAL = 'mysql_user = "u"\nmysql_database = "d"\nfrappe_site = "site.local"\n'


def parsed(extra: str = "") -> Config:
    """The Config of MINIMAL plus `extra` lines."""
    return parse(MINIMAL + extra)[0]


class RustCompatibilityTests(unittest.SynchronousTestCase):
    """The Rust daemon's configuration file is accepted with the same meanings."""

    def setUp(self):
        self.config, self.warnings = parse(RUST_SAMPLE)

    def test_no_warnings(self):
        """Every key of the Rust sample, email keys included, is known: no warning at all."""
        self.assertEqual(self.warnings, [])

    def test_general_keys(self):
        """Name, environment, intervals, zone and level keep their values and types."""
        c = self.config
        self.assertEqual((c.name, c.environment_name), ("BTU Scheduler Daemon", "PROD"))
        self.assertEqual((c.full_refresh_internal_secs, c.scheduler_polling_interval), (180, 30))
        self.assertEqual((c.time_zone_string, c.tracing_level), ("America/New_York", "DEBUG"))
        self.assertIs(c.startup_without_database_connections, True)

    def test_mysql_keys(self):
        """The MySQL keys are read as strings and an integer port, and SQL is the schedule source."""
        c = self.config
        self.assertEqual((c.mysql_user, c.mysql_password, c.mysql_host, c.mysql_port, c.mysql_database),
                         ("frappe_db_user", "mysql-pass-s3cr3t", "db.internal", 3307, "_0123456789abcdef"))
        self.assertTrue(c.uses_sql)

    def test_rq_keys_make_the_redis_url(self):
        """Without redis_url, rq_host and rq_port locate Redis."""
        self.assertEqual(self.config.effective_redis_url, "redis://redis.internal:11000/0")

    def test_socket_keys(self):
        """The socket path and its group owner are kept."""
        self.assertEqual(self.config.socket_path, "/tmp/btu_scheduler.sock")
        self.assertEqual(self.config.socket_file_group_owner, "frappe")

    def test_webserver_keys(self):
        """The webserver keys are kept, the port as an integer."""
        c = self.config
        self.assertEqual((c.webserver_ip, c.webserver_port, c.webserver_host_header, c.webserver_token),
                         ("10.0.0.5", 8001, "erp.example.com", "token api-key:tok-s3cr3t"))

    def test_host_header_is_the_frappe_site(self):
        """Without frappe_site, the Rust config's webserver_host_header names the site jobs run on."""
        self.assertIsNone(self.config.frappe_site)
        self.assertEqual(self.config.effective_frappe_site, "erp.example.com")

    def test_email_keys_ignored(self):
        """Email keys are accepted but not kept (email is not implemented)."""
        self.assertFalse(any(key.startswith("email_") for key in self.config.redacted()))

    def test_packaged_sample_parses(self):
        """SAMPLE_CONFIG, printed to operators, is itself a valid file without warnings."""
        config, warnings = parse(SAMPLE_CONFIG)
        self.assertEqual(warnings, [])
        self.assertEqual(config.rq_port, 11000)


class DefaultTests(unittest.SynchronousTestCase):
    """Keys left out take their documented defaults."""

    def test_rust_defaults(self):
        """The Rust daemon's keys default to its values."""
        c = parsed()
        self.assertEqual((c.full_refresh_internal_secs, c.scheduler_polling_interval), (900, 60))
        self.assertEqual((c.time_zone_string, c.tracing_level), ("UTC", "INFO"))
        self.assertIs(c.startup_without_database_connections, False)
        self.assertEqual((c.mysql_host, c.mysql_port, c.rq_host, c.rq_port), ("127.0.0.1", 3306, "127.0.0.1", 6379))
        self.assertEqual(c.socket_path, "/tmp/btu_scheduler.sock")
        self.assertIsNone(c.socket_file_group_owner)

    def test_additive_defaults(self):
        """The additive keys default to Rust-equivalent behaviour."""
        c = parsed()
        self.assertIsNone(c.redis_url)
        self.assertEqual(c.effective_redis_url, "redis://127.0.0.1:6379/0")
        self.assertEqual((c.job_builder, c.queue_name_template), ("auto", "{queue_name}"))
        self.assertEqual((c.misfire_grace_secs, c.socket_mode), (300, 0o660))
        self.assertEqual(c.frappe_user, "Administrator")

    def test_frappe_site_wins_over_host_header(self):
        """An explicit frappe_site is preferred to webserver_host_header."""
        c = parsed('webserver_host_header = "other.example.com"\n')
        self.assertEqual(c.effective_frappe_site, "site.local")


class AdditiveKeyTests(unittest.SynchronousTestCase):
    """btu_twisted's own keys."""

    def test_redis_url_precedence(self):
        """redis_url takes precedence over rq_host and rq_port."""
        c = parsed('rq_host = "ignored"\nrq_port = 1234\nredis_url = "unix:///run/redis.sock?db=2"\n')
        self.assertEqual(c.effective_redis_url, "unix:///run/redis.sock?db=2")

    def test_schedule_file_replaces_mysql(self):
        """With schedule_file, the MySQL keys are not required."""
        config, _ = parse('schedule_file = "s.toml"\njob_builder = "python"\n')
        self.assertFalse(config.uses_sql)

    def test_schedule_file_relative_to_config(self):
        """A relative schedule_file is resolved against the configuration file's directory."""
        config, _ = parse('schedule_file = "s.toml"\njob_builder = "python"\n', base_dir=Path("/etc/btu"))
        self.assertEqual(config.schedule_file, "/etc/btu/s.toml")

    def test_socket_mode_octal_string(self):
        """socket_mode may be written as an octal string."""
        self.assertEqual(parsed('socket_mode = "0600"\n').socket_mode, 0o600)

    def test_float_key_accepts_integer(self):
        """A number key accepts an integer and keeps it as a float."""
        value = parsed("socket_idle_timeout_secs = 3\n").socket_idle_timeout_secs
        self.assertEqual((value, type(value)), (3.0, float))

    def test_unknown_key_warns(self):
        """An unknown key is a warning naming it, not an error."""
        config, warnings = parse(MINIMAL + 'polling_intervall = 5\n')
        self.assertEqual(config.scheduler_polling_interval, 60)
        self.assertEqual(len(warnings), 1)
        self.assertIn("polling_intervall", warnings[0])


class InvalidValueTests(unittest.SynchronousTestCase):
    """Each unusable value raises ConfigError naming the key."""

    def assertRejected(self, extra: str, key: str, base: str = MINIMAL) -> ConfigError:
        error = self.assertRaises(ConfigError, parse, base + extra)
        self.assertIn(key, str(error))
        return error

    def test_wrong_type(self):
        """A string where an integer is expected."""
        self.assertRejected('mysql_port = "3306"\n', "mysql_port")

    def test_bool_where_int(self):
        """true is not a number of seconds."""
        self.assertRejected("full_refresh_internal_secs = true\n", "full_refresh_internal_secs")

    def test_int_where_bool(self):
        """1 is not true."""
        self.assertRejected("startup_without_database_connections = 1\n", "startup_without_database_connections")

    def test_port_out_of_range(self):
        """A port above 65535 or zero is not a TCP port."""
        self.assertRejected("rq_port = 65536\n", "rq_port")
        self.assertRejected("webserver_port = 0\n", "webserver_port")

    def test_interval_not_positive(self):
        """Intervals must be greater than zero."""
        self.assertRejected("scheduler_polling_interval = 0\n", "scheduler_polling_interval")

    def test_negative_misfire_grace(self):
        """A negative grace period makes no sense."""
        self.assertRejected("misfire_grace_secs = -1\n", "misfire_grace_secs")

    def test_bad_tracing_level(self):
        """tracing_level must be a level name."""
        self.assertRejected('tracing_level = "LOUD"\n', "tracing_level")

    def test_unknown_time_zone(self):
        """time_zone_string must be an IANA zone."""
        self.assertRejected('time_zone_string = "Mars/Olympus_Mons"\n', "time_zone_string")

    def test_bad_job_builder(self):
        """job_builder must be one of the known builders."""
        self.assertRejected('job_builder = "celery"\n', "job_builder")

    def test_template_without_queue_name(self):
        """queue_name_template must contain {queue_name}."""
        self.assertRejected('queue_name_template = "mybench:default"\n', "queue_name_template")

    def test_template_with_other_placeholder(self):
        """A template that cannot be formatted with the queue name alone is rejected at load time."""
        self.assertRejected('queue_name_template = "{bench}:{queue_name}"\n', "queue_name_template")
        self.assertRejected('queue_name_template = "{queue_name}:{"\n', "queue_name_template")

    def test_missing_mysql_user(self):
        """Without schedule_file, mysql_user is required."""
        self.assertRejected("", "mysql_user", base='mysql_database = "d"\nfrappe_site = "s"\n')

    def test_missing_frappe_site(self):
        """The frappe and btu job builders need a site, and the error says how to set it."""
        for kind in ("frappe", "btu"):
            error = self.assertRejected(f'job_builder = "{kind}"\n', "frappe_site",
                                        base='mysql_user = "u"\nmysql_database = "d"\n')
            self.assertIn('set frappe_site = "<site name>"', str(error))

    def test_auto_and_btu_web_need_no_site(self):
        """auto (the default) and btu-web start without frappe_site (btu-web's site is the Host header)."""
        for extra in ("", 'job_builder = "btu-web"\nwebserver_token = "token a:b"\n'):
            config, _ = parse('mysql_user = "u"\nmysql_database = "d"\n' + extra)
            self.assertIsNone(config.effective_frappe_site)

    def test_btu_web_needs_token(self):
        """The btu-web job builder needs webserver_token."""
        self.assertRejected('job_builder = "btu-web"\n', "webserver_token",
                            base='mysql_user = "u"\nmysql_database = "d"\n')

    def test_bad_socket_mode(self):
        """socket_mode must be an octal file mode."""
        self.assertRejected('socket_mode = "rw-rw----"\n', "socket_mode")
        self.assertRejected("socket_mode = 4096\n", "socket_mode")

    def test_bad_redis_url_scheme(self):
        """redis_url must use a scheme Redis clients understand."""
        self.assertRejected('redis_url = "http://127.0.0.1:6379"\n', "redis_url")

    def test_uid_list_of_strings(self):
        """socket_allowed_uids must be a list of integers."""
        self.assertRejected('socket_allowed_uids = ["root"]\n', "socket_allowed_uids")


class SecretTests(unittest.SynchronousTestCase):
    """Passwords and tokens never leak into repr, redacted output or errors."""

    def test_repr(self):
        """repr() of a config holding every secret shows none of them."""
        config = replace(parse(RUST_SAMPLE)[0], redis_url="redis://:redis-s3cr3t@h:6379/0")
        text = repr(config)
        for secret in SECRETS + ("redis-s3cr3t",):
            self.assertNotIn(secret, text)

    def test_redacted(self):
        """redacted() masks secrets but keeps the other values."""
        config = replace(parse(RUST_SAMPLE)[0], redis_url="redis://:redis-s3cr3t@h:6379/0")
        out = config.redacted()
        self.assertEqual((out["mysql_password"], out["webserver_token"], out["redis_url"]), ("***",) * 3)
        self.assertEqual(out["mysql_user"], "frappe_db_user")
        for secret in SECRETS + ("redis-s3cr3t",):
            self.assertNotIn(secret, repr(out))

    def test_wrong_typed_password(self):
        """A password of the wrong type is rejected without quoting it."""
        error = self.assertRaises(ConfigError, parse, MINIMAL + "mysql_password = 918273645\n")
        self.assertIn("mysql_password", str(error))
        self.assertNotIn("918273645", str(error))

    def test_wrong_typed_token_list(self):
        """A token given as a list is rejected without quoting it."""
        error = self.assertRaises(ConfigError, parse, MINIMAL + 'webserver_token = ["tok-s3cr3t"]\n')
        self.assertNotIn("tok-s3cr3t", str(error))

    def test_bad_redis_url_not_quoted(self):
        """An unusable redis_url, which may hold a password, is not quoted."""
        error = self.assertRaises(ConfigError, parse, MINIMAL + 'redis_url = "http://:redis-s3cr3t@h"\n')
        self.assertNotIn("redis-s3cr3t", str(error))

    def test_invalid_toml_after_password(self):
        """A TOML syntax error on a password line does not quote the password."""
        error = self.assertRaises(ConfigError, parse, MINIMAL + 'mysql_password = "mysql-pass-s3cr3t\n')
        self.assertNotIn("mysql-pass-s3cr3t", str(error))


class FileTests(unittest.SynchronousTestCase):
    """load() reads a file and names it in every problem."""

    def setUp(self):
        self.directory = Path(tempfile.mkdtemp(prefix="btu-config-"))
        self.addCleanup(shutil.rmtree, self.directory, True)
        self.path = self.directory / "btu_scheduler.toml"

    def write(self, text: str, mode: int = 0o600) -> Path:
        self.path.write_text(text, encoding="utf-8")
        os.chmod(self.path, mode)
        return self.path

    def test_missing_file(self):
        """A missing file is a ConfigError naming it."""
        error = self.assertRaises(ConfigError, load, self.path)
        self.assertIn(str(self.path), str(error))

    def test_invalid_toml(self):
        """Invalid TOML is a ConfigError naming the file and saying it is not TOML."""
        error = self.assertRaises(ConfigError, load, self.write("name = \n"))
        self.assertIn(str(self.path), str(error))
        self.assertIn("TOML", str(error))

    def test_invalid_value_names_file_and_key(self):
        """A bad value is reported with both the file and the key."""
        error = self.assertRaises(ConfigError, load, self.write(MINIMAL + "rq_port = -1\n"))
        self.assertIn(str(self.path), str(error))
        self.assertIn("rq_port", str(error))

    def test_world_readable_password_warns(self):
        """A file holding a password that others can read gives the chmod warning."""
        _, warnings = load(self.write(RUST_SAMPLE, 0o644))
        self.assertEqual(len(warnings), 1)
        self.assertIn(f"chmod o-rwx {self.path}", warnings[0])

    def test_world_readable_secret_of_any_kind_warns(self):
        """Every secret key counts: a Sentinel password, or btu_scheduler_py's sql_password, too."""
        for text in ('redis_sentinels = ["127.0.0.1:26379"]\nredis_sentinel_password = "s3cr3t"\n',
                     'sql_password = "s3cr3t"\n'):
            _, warnings = load(self.write(MINIMAL + text, 0o644))
            self.assertEqual(len(warnings), 1, (text, warnings))
            self.assertIn(f"chmod o-rwx {self.path}", warnings[0])

    def test_private_file_no_warning(self):
        """The same file readable only by its owner and group gives no warning."""
        _, warnings = load(self.write(RUST_SAMPLE, 0o640))
        self.assertEqual(warnings, [])

    def test_world_readable_without_secrets(self):
        """A world-readable file without secrets gives no warning."""
        _, warnings = load(self.write(MINIMAL, 0o644))
        self.assertEqual(warnings, [])

    def test_config_path_order(self):
        """--config wins over $BTU_SCHEDULER_CONFIG, which wins over the Rust default path."""
        self.patch(os, "environ", {configuration.CONFIG_ENV_VAR: "/env/btu.toml"})
        self.assertEqual(configuration.config_path("/cli/btu.toml"), Path("/cli/btu.toml"))
        self.assertEqual(configuration.config_path(None), Path("/env/btu.toml"))
        self.patch(os, "environ", {})
        self.assertEqual(configuration.config_path(None), Path(configuration.DEFAULT_CONFIG_PATH))


class ReplaceTests(unittest.SynchronousTestCase):
    """replace() applies command-line overrides with the same checks as the file."""

    def test_override_applied(self):
        """A valid override replaces the value."""
        self.assertEqual(replace(parsed(), socket_path="/run/btu.sock").socket_path, "/run/btu.sock")

    def test_wrong_type_rejected(self):
        """An override of the wrong type is rejected naming the key."""
        error = self.assertRaises(ConfigError, replace, parsed(), rq_port="6379")
        self.assertIn("rq_port", str(error))

    def test_cross_field_check(self):
        """An override that breaks a cross-field rule is rejected."""
        error = self.assertRaises(ConfigError, replace, parsed(), tracing_level="CHATTY")
        self.assertIn("tracing_level", str(error))


class LogLevelTests(unittest.SynchronousTestCase):
    """tracing_level filters the events of btu_twisted's loggers."""

    def setUp(self):
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)
        self.addCleanup(logs.set_level, "INFO")
        self.log = Logger(namespace="btu_twisted.test_level", observer=logs.OBSERVER)

    def texts(self):
        return [e["log_format"] for e in self.events if e.get("log_namespace") == "btu_twisted.test_level"]

    def test_warn_filters_info(self):
        """At WARN, info events are dropped and warnings pass."""
        logs.set_level("WARN")
        self.log.info("quiet")
        self.log.warn("loud")
        self.assertEqual(self.texts(), ["loud"])

    def test_debugging_follows_the_level(self):
        """debugging() says whether debug events pass at the current level."""
        self.assertFalse(logs.debugging())
        logs.set_level("DEBUG")
        self.assertTrue(logs.debugging())
        logs.set_level("ERROR")
        self.assertFalse(logs.debugging())

    def test_debug_passes_debug(self):
        """At TRACE (the Rust name), debug events pass."""
        logs.set_level("trace")
        self.log.debug("detail")
        self.assertEqual(self.texts(), ["detail"])
