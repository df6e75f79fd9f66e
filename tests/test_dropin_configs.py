"""Drop-in configs: every Rust btu_scheduler_daemon 0.3.x file starts unchanged — its README sample and
a 0.3.8 file with every key of its AppConfig — parsed, and started as real `twistd -n btu` processes
whose environment-specific values (servers, paths, group, user) come from BTU_SCHEDULER_* variables."""

from __future__ import annotations

import grp
import os

from twisted.trial import unittest

from btu_twisted.config import parse
from tests.support import frappe_schema as fs
from tests.support.daemon import TwistdProcess, control_request, short_dir, twistd_env
from tests.support.servers import use_shared_servers
from tests.test_faults import CLEAN_SIGTERM_EXITS, NOOP, PING, START_TIMEOUT_SECS, poll

# The Rust daemon's README sample, byte for byte (btu_scheduler_daemon README, "Configuration").
RUST_README_SAMPLE = """\
name = "BTU Scheduler Daemon"
environment_name = "DEV"
full_refresh_internal_secs = 900
scheduler_polling_interval=60
time_zone_string="America/Los_Angeles"
tracing_level="INFO"

# Email Setup
email_address_from = "testing@datahenge.com"
email_host_name = "asmtp.mail.my_email_provider.com"
email_host_port = 587
email_account_name = "testing@datahenge.com"
email_account_password  = "my_smtp_email_password"

# Email Features
email_addresses = [ "brian@datahenge.com" ]
email_on_level="INFO"
email_when_queuing=true

# MySQL
mysql_user = "root"
mysql_password = "password_for_mysql_database"
mysql_host = "localhost"
mysql_port = 3306
mysql_database = "my_erpnext_db_name"

# RQ
rq_host = "127.0.0.1"
rq_port = 11000
socket_path = "/tmp/btu_scheduler.sock"
socket_file_group_owner = "erpnext_group"
webserver_ip = "127.0.0.1"
webserver_port = 8000
webserver_token = "token abcdef123456789:abcdef123456789"
"""
# Every field of 0.3.8's AppConfig (btu_scheduler/src/config.rs), with values such a file holds.
RUST_0_3_8_ALL_KEYS = """\
environment_name = "PROD"
full_refresh_internal_secs = 180
time_zone_string = "America/New_York"
tracing_level = "WARN"
startup_without_database_connections = true
email_address_from = "btu@example.com"
email_host_name = "smtp.example.com"
email_host_port = 587
email_account_name = "btu@example.com"
email_account_password = "email-s3cr3t"
email_addresses = ["ops@example.com", "dev@example.com"]
email_on_level = "ERROR"
email_when_queuing = false
mysql_user = "frappe_db_user"
mysql_password = "password_for_mysql_database"
mysql_host = "localhost"
mysql_port = 3306
mysql_database = "_0123456789abcdef"
rq_host = "127.0.0.1"
rq_port = 11000
scheduler_polling_interval = 60
socket_path = "/tmp/btu_scheduler.sock"
socket_file_group_owner = "frappe_group"
webserver_ip = "127.0.0.1"
webserver_port = 8000
webserver_host_header = "mysubdomain.domain.com"
webserver_token = "token abcd1234:efgh5678"
"""
class RustConfigParseTests(unittest.SynchronousTestCase):
    """Both files parse with their Rust meanings and no warning."""

    def test_readme_sample(self):
        """The README sample (no webserver_host_header) parses with no warning."""
        config, warnings = parse(RUST_README_SAMPLE)
        self.assertEqual(warnings, [])
        self.assertEqual((config.time_zone_string, config.mysql_database, config.rq_port),
                         ("America/Los_Angeles", "my_erpnext_db_name", 11000))

    def test_readme_sample_keeps_its_rust_meanings(self):
        """The README sample's group, token and start-up switch keep their Rust meanings."""
        config, warnings = parse(RUST_README_SAMPLE)
        self.assertEqual(warnings, [])
        self.assertEqual((config.socket_file_group_owner, config.webserver_token, config.startup_without_database_connections),
                         ("erpnext_group", "token abcdef123456789:abcdef123456789", False))

    def test_0_3_8_all_keys(self):
        """A file with every 0.3.8 key parses with no warning and the Rust meanings."""
        config, warnings = parse(RUST_0_3_8_ALL_KEYS)
        self.assertEqual(warnings, [])
        self.assertEqual((config.environment_name, config.full_refresh_internal_secs, config.tracing_level,
                          config.startup_without_database_connections, config.mysql_port,
                          config.effective_frappe_site, config.effective_redis_url),
                         ("PROD", 180, "WARN", True, 3306, "mysubdomain.domain.com", "redis://127.0.0.1:11000/0"))


class RustConfigStartTests(unittest.TestCase):
    """`twistd -n btu --config <the Rust file>` starts, plans and stops; only the environment differs."""

    timeout = 60

    def setUp(self):
        use_shared_servers(self)
        fs.insert_task(self.sql, "BTU-00001", NOOP)
        fs.insert_schedule(self.sql, "TS-000001", "BTU-00001", "0 4 * * *")
        # The files' password, for a user of our own on the private server (root's is empty).
        self.user = f"btu_rust_{os.getpid()}"[:32]
        with self.sql.cursor() as cur:
            cur.execute("CREATE USER IF NOT EXISTS %s@'localhost' IDENTIFIED BY 'password_for_mysql_database'",
                        (self.user,))
            cur.execute(f"GRANT ALL ON `{self.database}`.* TO %s@'localhost'", (self.user,))
        self.addCleanup(self.drop_user)
        self.dir = short_dir(self)
        self.socket_path = os.path.join(self.dir, "btu.sock")

    def drop_user(self):
        with self.sql.cursor() as cur:
            cur.execute("DROP USER IF EXISTS %s@'localhost'", (self.user,))

    def start(self, text: str, **extra) -> TwistdProcess:
        path = os.path.join(self.dir, "btu_scheduler.toml")
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(path, 0o600)
        env = twistd_env(BTU_SCHEDULER_MYSQL_UNIX_SOCKET=self.mariadb.socket_path,
                         BTU_SCHEDULER_MYSQL_USER=self.user, BTU_SCHEDULER_MYSQL_DATABASE=self.database,
                         BTU_SCHEDULER_REDIS_URL=self.redis_server.url,
                         BTU_SCHEDULER_SOCKET_PATH=self.socket_path,
                         BTU_SCHEDULER_SOCKET_FILE_GROUP_OWNER=grp.getgrgid(os.getgid()).gr_name, **extra)
        return TwistdProcess(self, ["-n", "--pidfile=", "--logfile=-", "btu", "--config", path], env=env,
                             cwd=self.dir)

    def runs_and_stops(self, daemon: TwistdProcess, zone: str) -> str:
        """Planned, answers ping and create (naming the file's zone), stops cleanly; returns the output."""
        def planned():
            if daemon.process.poll() is not None:
                self.fail(f"twistd exited early; {daemon.describe()}")
            return self.redis.zcard("btu_scheduler:task_execution_times") == 1

        poll(planned, START_TIMEOUT_SECS, "TS-000001 to be planned")
        self.assertEqual(control_request(self.socket_path, PING, timeout=2), "pong")
        reply = control_request(self.socket_path, {"request_type": "create_task_schedule",
                                                   "request_content": "TS-000001"})
        self.assertIn(f"({zone}, from time_zone_string)", reply)
        self.assertIn(daemon.terminate(), CLEAN_SIGTERM_EXITS, daemon.describe())
        output = daemon.output()
        self.assertNotIn("Traceback", output)
        self.assertNotIn("password_for_mysql_database", output)
        return output

    def test_readme_sample_starts(self):
        """The README sample, unchanged: planned in America/Los_Angeles with the file's password."""
        output = self.runs_and_stops(self.start(RUST_README_SAMPLE), "America/Los_Angeles")
        self.assertIn("mysql_password from file", output)  # its tracing_level INFO shows the settings line
        self.assertIn("mysql_user from environment BTU_SCHEDULER_MYSQL_USER", output)

    def test_0_3_8_all_keys_starts(self):
        """The 0.3.8 file with every key: planned in America/New_York with the file's password."""
        self.runs_and_stops(self.start(RUST_0_3_8_ALL_KEYS), "America/New_York")
