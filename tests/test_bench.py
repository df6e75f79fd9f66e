"""Bench discovery: the settings a Frappe bench's own files hold, where each came from, and errors
that name the file and the key."""

from __future__ import annotations

import io
import os
import sys

from twisted.trial import unittest

from btu_twisted import bench, environment, tap
from btu_twisted.config import BenchConfigError, ConfigError, parse
from tests.support.bench_tree import V13_INIT, make_bench, write_json

SITE_ONE = {"db_name": "_1a2b3c", "db_password": "s1te-one-pa55", "db_host": "10.0.0.5", "db_port": 3307}
SITE_TWO = {"db_name": "_4d5e6f", "db_password": "s1te-two-pa55"}
COMMON = {"redis_queue": "redis://127.0.0.1:11000", "redis_cache": "redis://127.0.0.1:13000",
          "bench_id": "acme-bench", "db_host": "127.0.0.1", "socketio_port": 9000}
COMMON_FILE = "bench sites/common_site_config.json"


class BenchCase(unittest.TestCase):
    """Helpers: a bench in a temp dir and the config parsed from it."""

    def bench(self, common=None, sites=None, current="one.localhost", frappe_init=None) -> str:
        path = self.mktemp()
        extra = {} if frappe_init is None else {"frappe_init": frappe_init}
        return make_bench(path, COMMON if common is None else common,
                          {"one.localhost": SITE_ONE, "two.localhost": SITE_TWO} if sites is None else sites,
                          current, **extra)

    def parsed(self, path: str, text: str = "", **command_line):
        return parse(text, command_line={"frappe_bench_path": path, **command_line})


class DiscoveredValuesTests(BenchCase):
    """What a bench supplies, and where each value is said to come from."""

    def test_v15_bench(self):
        """A v15 bench gives the chosen site's database, the queue Redis and `<bench_id>:` queue names."""
        config, warnings = self.parsed(self.bench(), frappe_sites=["one.localhost"])
        self.assertEqual(warnings, [])
        self.assertEqual((config.frappe_site, config.mysql_database, config.mysql_user, config.mysql_password,
                          config.mysql_host, config.mysql_port, config.redis_url, config.queue_name_template),
                         ("one.localhost", "_1a2b3c", "_1a2b3c", "s1te-one-pa55", "10.0.0.5", 3307,
                          "redis://127.0.0.1:11000", "acme-bench:{queue_name}"))
        site_file = "bench sites/one.localhost/site_config.json"
        self.assertEqual(config.origins, {
            "frappe_bench_path": "command line", "frappe_sites": "command line",
            "frappe_site": "--site / frappe_sites",
            "mysql_database": site_file, "mysql_user": site_file, "mysql_password": site_file,
            "mysql_host": site_file, "mysql_port": site_file, "redis_url": COMMON_FILE,
            "queue_name_template": "bench apps/frappe/frappe/__init__.py (Frappe 15.51.1)"})

    def test_v13_bench_has_bare_queue_names(self):
        """Frappe v13 names its queues bare (`default`), so the template stays `{queue_name}`."""
        config, _ = self.parsed(self.bench(frappe_init=V13_INIT))
        self.assertEqual(config.queue_name_template, "{queue_name}")
        self.assertNotIn("queue_name_template", config.origins)

    def test_bench_id_defaults_to_the_path(self):
        """Without bench_id, Frappe's own default: the bench's real path with '/' as '-'."""
        common = {k: v for k, v in COMMON.items() if k != "bench_id"}
        path = self.bench(common=common)
        config, _ = self.parsed(path)
        expected = os.path.realpath(path).strip("/").replace("/", "-")
        self.assertEqual(config.queue_name_template, expected + ":{queue_name}")

    def test_common_settings_apply_when_the_site_lacks_them(self):
        """A key the site does not set comes from common_site_config (Frappe's get_site_config)."""
        config, _ = self.parsed(self.bench(), frappe_sites=["two.localhost"])
        self.assertEqual((config.mysql_database, config.mysql_host, config.mysql_port),
                         ("_4d5e6f", "127.0.0.1", 3306))
        self.assertEqual(config.origins["mysql_host"], COMMON_FILE)
        self.assertNotIn("mysql_port", config.origins)

    def test_db_user_and_socket(self):
        """db_user (else db_name, Frappe's default) and db_socket become mysql_user and mysql_unix_socket."""
        sites = {"one.localhost": {**SITE_ONE, "db_user": "frappe_ro", "db_socket": "/run/mysqld/mysqld.sock"}}
        config, _ = self.parsed(self.bench(sites=sites))
        self.assertEqual((config.mysql_user, config.mysql_unix_socket), ("frappe_ro", "/run/mysqld/mysqld.sock"))

    def test_use_rq_auth(self):
        """use_rq_auth puts Frappe's RQ ACL user in the URL: rq_username, else the bench id."""
        common = {**COMMON, "use_rq_auth": True, "rq_password": "rq p@ss"}
        self.assertEqual(self.parsed(self.bench(common=common))[0].redis_url,
                         "redis://acme-bench:rq%20p%40ss@127.0.0.1:11000")
        common["rq_username"] = "btu"
        self.assertEqual(self.parsed(self.bench(common=common))[0].redis_url,
                         "redis://btu:rq%20p%40ss@127.0.0.1:11000")

    def test_explicit_keys_win(self):
        """Keys of the file, the environment and the command line win over the bench's."""
        path = self.bench()
        config, _ = parse('mysql_host = "db.internal"\nqueue_name_template = "x:{queue_name}"\n',
                          environ={"BTU_SCHEDULER_MYSQL_PORT": "3310", "BTU_SCHEDULER_FRAPPE_BENCH_PATH": path,
                                   "BTU_SCHEDULER_FRAPPE_SITES": "one.localhost"})
        self.assertEqual((config.mysql_host, config.queue_name_template, config.mysql_port, config.mysql_database),
                         ("db.internal", "x:{queue_name}", 3310, "_1a2b3c"))
        self.assertEqual((config.origins["mysql_host"], config.origins["mysql_port"],
                          config.origins["frappe_bench_path"]),
                         ("file", "environment BTU_SCHEDULER_MYSQL_PORT",
                          "environment BTU_SCHEDULER_FRAPPE_BENCH_PATH"))

    def test_site_choice(self):
        """One --site (or frappe_site) serves that site; a bench with one site serves it; otherwise
        every site is served, and currentsite.txt, else default_site, names the default one."""
        path = self.bench(common={**COMMON, "default_site": "two.localhost"})
        self.assertEqual(self.parsed(path, frappe_sites=["two.localhost"])[0].origins["frappe_site"],
                         "--site / frappe_sites")
        config, _ = self.parsed(path)
        self.assertEqual((config.serves_bench, config.frappe_site, config.mysql_database, config.bench_default_site),
                         (True, None, None, "one.localhost"))
        self.assertEqual(bench.discover(path).default_site, "one.localhost")
        os.remove(os.path.join(path, "sites", "currentsite.txt"))
        self.assertEqual(bench.discover(path).default_site, "two.localhost")
        only = self.bench(sites={"only.localhost": SITE_ONE}, current=None)
        config, _ = self.parsed(only)
        self.assertEqual((config.serves_bench, config.frappe_site), (False, "only.localhost"))

    def test_frappe_site_key_chooses_the_site(self):
        """An explicit frappe_site chooses which site's database is read."""
        config, _ = self.parsed(self.bench(), 'frappe_site = "two.localhost"\n')
        self.assertEqual((config.mysql_database, config.origins["frappe_site"]), ("_4d5e6f", "file"))

    def test_sites_from_the_environment(self):
        """BTU_SCHEDULER_FRAPPE_SITES is a comma-separated list."""
        config, _ = parse("", environ={"BTU_SCHEDULER_FRAPPE_BENCH_PATH": self.bench(),
                                       "BTU_SCHEDULER_FRAPPE_SITES": " two.localhost "})
        self.assertEqual((config.frappe_sites, config.frappe_site), (("two.localhost",), "two.localhost"))

    def test_secrets_never_shown(self):
        """The start-up line of origins and the redacted settings carry no discovered password."""
        config, _ = self.parsed(self.bench(common={**COMMON, "use_rq_auth": True, "rq_password": "rq-s3cret"}))
        shown = environment.describe(config.origins) + repr(config) + repr(config.redacted())
        for secret in ("s1te-one-pa55", "rq-s3cret"):
            self.assertNotIn(secret, shown)

    def test_sentinel_settings_are_mapped(self):
        """Frappe's redis_queue_sentinel_* / redis_queue_master_* become our Sentinel keys, with origins."""
        common = {**COMMON, "redis_queue_sentinel_enabled": True,
                  "redis_queue_sentinels": ["10.0.0.1:26379", "10.0.0.2:26380"],
                  "redis_queue_master_service": "bench-queue", "redis_queue_sentinel_username": "watcher",
                  "redis_queue_sentinel_password": "s3ntinel-pa55", "redis_queue_master_username": "rq"}
        sites = {"one.localhost": {**SITE_ONE, "redis_queue_master_password": "ma5ter-pa55"}}
        config, warnings = self.parsed(self.bench(common=common, sites=sites))
        self.assertEqual(warnings, [])
        self.assertEqual((config.redis_sentinels, config.redis_sentinel_service, config.redis_sentinel_username,
                          config.redis_sentinel_password, config.redis_master_username,
                          config.redis_master_password),
                         (("10.0.0.1:26379", "10.0.0.2:26380"), "bench-queue", "watcher", "s3ntinel-pa55",
                          "rq", "ma5ter-pa55"))
        self.assertEqual({key: config.origins[key] for key in ("redis_sentinels", "redis_sentinel_service",
                                                               "redis_master_password")},
                         {"redis_sentinels": COMMON_FILE, "redis_sentinel_service": COMMON_FILE,
                          "redis_master_password": "bench sites/one.localhost/site_config.json"})
        shown = environment.describe(config.origins) + repr(config) + repr(config.redacted())
        for secret in ("s3ntinel-pa55", "ma5ter-pa55"):
            self.assertNotIn(secret, shown)

    def test_sentinel_settings_need_enabled(self):
        """Without redis_queue_sentinel_enabled Frappe ignores its Sentinel keys, and so do we."""
        common = {**COMMON, "redis_queue_sentinels": ["s1:26379"], "redis_queue_master_service": "q"}
        config, _ = self.parsed(self.bench(common=common))
        self.assertEqual((config.redis_sentinels, "redis_sentinels" in config.origins), ((), False))

    def test_explicit_sentinel_keys_win(self):
        """A redis_sentinel_* key of the configuration file beats Frappe's."""
        common = {**COMMON, "redis_queue_sentinel_enabled": True, "redis_queue_sentinels": ["s1:26379"],
                  "redis_queue_master_service": "bench-queue"}
        config, _ = self.parsed(self.bench(common=common),
                                'redis_sentinels = ["s9:26379"]\nredis_sentinel_service = "mine"\n')
        self.assertEqual((config.redis_sentinels, config.redis_sentinel_service, config.origins["redis_sentinels"]),
                         (("s9:26379",), "mine", "file"))

    def test_sites_need_a_bench(self):
        """frappe_sites without frappe_bench_path is an error naming both."""
        with self.assertRaisesRegex(ConfigError, "^frappe_sites: needs frappe_bench_path"):
            parse('frappe_sites = ["one.localhost"]\nschedule_file = "/x.toml"\n')


class DiscoveryErrorTests(BenchCase):
    """Every discovery error names the file (or setting) and the key."""

    def error(self, path: str, **command_line) -> str:
        with self.assertRaises(BenchConfigError) as caught:
            self.parsed(path, **command_line)
        return str(caught.exception)

    def test_not_a_bench(self):
        """A directory without sites/ is named as not a bench."""
        path = self.mktemp()
        os.makedirs(path)
        self.assertEqual(self.error(path), f"frappe_bench_path: {path} is not a Frappe bench (it has no "
                                           "sites/ directory)")

    def test_missing_common_site_config(self):
        """A missing common_site_config.json is named."""
        path = self.bench()
        os.remove(os.path.join(path, "sites", "common_site_config.json"))
        self.assertEqual(self.error(path), f"{path}/sites/common_site_config.json: file not found")

    def test_unreadable_json(self):
        """JSON that does not parse names the file and where it breaks."""
        path = self.bench()
        with open(os.path.join(path, "sites", "one.localhost", "site_config.json"), "w") as f:
            f.write('{"db_name": "_1a2b3c",,}')
        self.assertRegex(self.error(path), rf"^{path}/sites/one.localhost/site_config.json: not valid JSON: "
                                           "Expecting property name .*line 1 column 23")

    def test_json_not_an_object(self):
        """A JSON array where an object belongs is named."""
        path = self.bench()
        write_json(os.path.join(path, "sites", "common_site_config.json"), ["redis_queue"])
        self.assertEqual(self.error(path), f"{path}/sites/common_site_config.json: expected a JSON object, "
                                           "got list")

    def test_site_without_db_name(self):
        """A site whose config has no db_name names the file and the key."""
        path = self.bench(sites={"one.localhost": {"db_password": "x"}})
        self.assertEqual(self.error(path), f"{path}/sites/one.localhost/site_config.json: db_name is missing "
                                           "(the site's database name)")

    def test_missing_redis_queue(self):
        """No redis_queue anywhere names common_site_config.json and the key."""
        path = self.bench(common={"bench_id": "b"})
        self.assertIn(f"{path}/sites/common_site_config.json: redis_queue is missing", self.error(path))

    def test_wrong_types(self):
        """A number where a string belongs, and a port that is not one, are named."""
        path = self.bench(sites={"one.localhost": {"db_name": 42}})
        self.assertEqual(self.error(path), f"{path}/sites/one.localhost/site_config.json: db_name must be a "
                                           "string, got int")
        path = self.bench(sites={"one.localhost": {"db_name": "_x", "db_port": "many"}})
        self.assertEqual(self.error(path), f"{path}/sites/one.localhost/site_config.json: db_port must be a "
                                           "TCP port number, got 'many'")

    def test_sentinel_settings(self):
        """Sentinel enabled without its sentinels or service, or with sentinels not a list, names the key."""
        enabled = {**COMMON, "redis_queue_sentinel_enabled": True}
        for extra, message in (({"redis_queue_master_service": "q"}, "redis_queue_sentinels is missing"),
                               ({"redis_queue_sentinels": ["s1:26379"]}, "redis_queue_master_service is missing"),
                               ({"redis_queue_sentinels": "s1:26379", "redis_queue_master_service": "q"},
                                "redis_queue_sentinels must be a list of \"host:port\" strings")):
            with self.assertRaisesRegex(BenchConfigError, f"common_site_config.json: .*{message}"):
                self.parsed(self.bench(common={**enabled, **extra}))
        bad = {**enabled, "redis_queue_sentinels": ["s1"], "redis_queue_master_service": "q"}
        with self.assertRaisesRegex(ConfigError, 'redis_sentinels: \'s1\' is not "host:port"'):
            self.parsed(self.bench(common=bad))

    def test_unknown_site(self):
        """A site named in currentsite.txt or --site that has no site_config.json is named with the others."""
        path = self.bench(current="gone.localhost")
        self.assertEqual(self.error(path), f"{path}/sites/currentsite.txt: site 'gone.localhost' has no "
                                           f"{path}/sites/gone.localhost/site_config.json (sites on this bench: "
                                           "one.localhost, two.localhost)")
        self.assertIn("--site / frappe_sites: site 'three'", self.error(path, frappe_sites=["three"]))

    def test_several_sites_and_no_choice(self):
        """Two sites and none named: both are served, each from its own site_config.json."""
        path = self.bench(current=None)
        config, _ = self.parsed(path)
        self.assertTrue(config.serves_bench)
        self.assertEqual(bench.discover(path).sites, ("one.localhost", "two.localhost"))
        self.assertEqual(bench.site_settings(bench.Path(path), "two.localhost")["mysql_database"].value, "_4d5e6f")

    def test_several_sites_asked_for(self):
        """Several --site names serve those; each must be a site of the bench with a readable config."""
        config, _ = self.parsed(self.bench(), frappe_sites=["one.localhost", "two.localhost"])
        self.assertEqual((config.serves_bench, config.frappe_sites), (True, ("one.localhost", "two.localhost")))
        path = self.bench(sites={"one.localhost": SITE_ONE, "two.localhost": {"db_password": "x"}})
        self.assertEqual(self.error(path, frappe_sites=["one.localhost", "two.localhost"]),
                         f"{path}/sites/two.localhost/site_config.json: db_name is missing (the site's "
                         "database name)")
        with self.assertRaisesRegex(ConfigError, "mysql_database: names one database"):
            self.parsed(self.bench(), 'mysql_database = "x"\n')

    def test_frappe_version(self):
        """A missing version file, or one without __version__, is named."""
        path = self.bench()
        version_file = os.path.join(path, "apps", "frappe", "frappe", "__init__.py")
        with open(version_file, "w") as f:
            f.write("import os\n")
        self.assertEqual(self.error(path), f"{version_file}: no __version__ = \"...\" line (the Frappe version)")
        os.remove(version_file)
        self.assertRegex(self.error(path), rf"^{version_file}: cannot read the Frappe version: No such file")


class CommandLineTests(BenchCase):
    """`twistd btu --bench PATH [--site NAME]`."""

    def setUp(self):
        self.patch(os, "environ", {})  # no BTU_SCHEDULER_CONFIG: the default path, absent here

    def test_bench_alone_is_enough(self):
        """With --bench and no configuration file, the bench supplies the settings."""
        options = tap.Options()
        options.parseOptions(["--bench", self.bench(), "--site", "two.localhost"])
        config = options["loaded"]
        self.assertEqual((config.mysql_database, config.frappe_sites, config.origins["frappe_sites"]),
                         ("_4d5e6f", ("two.localhost",), "command line"))

    def test_bench_error_is_one_line(self):
        """A discovery error exits 1 with one line naming the file (no sample configuration)."""
        path = self.bench(sites={"one.localhost": {}})
        self.patch(sys, "stderr", io.StringIO())
        with self.assertRaises(SystemExit) as caught:
            tap.Options().parseOptions(["--bench", path])
        self.assertEqual(caught.exception.code, 1)
        self.assertEqual(sys.stderr.getvalue(),
                         f"btu: {path}/sites/one.localhost/site_config.json: db_name is missing "
                         "(the site's database name)\n")

    def test_a_named_config_must_exist(self):
        """--bench does not excuse a --config file that is not there."""
        self.patch(sys, "stderr", io.StringIO())
        with self.assertRaises(SystemExit):
            tap.Options().parseOptions(["--bench", self.bench(), "--config", "/nonexistent/btu.toml"])
        self.assertIn("configuration file /nonexistent/btu.toml does not exist", sys.stderr.getvalue())
