"""SQLSource.read against a real MariaDB: what the Schedules it builds keep in memory."""

from __future__ import annotations

from twisted.internet import defer
from twisted.trial import unittest

from tests.support import frappe_schema as fs
from tests.support.servers import use_shared_servers
from tests.support.sources import shared_sql_source


class RowIdentityTests(unittest.TestCase):
    """Rows are built on the caller's ID strings, so the row cache keeps one copy of each ID."""

    timeout = 30

    def setUp(self):
        use_shared_servers(self)
        self.source = shared_sql_source(self)
        fs.insert_task(self.sql, "BTU-00001", "app.run")
        for name in ("TS-000001", "TS-000002"):
            fs.insert_schedule(self.sql, name, "BTU-00001", "0 3 * * *")

    @defer.inlineCallbacks
    def test_schedule_id_is_the_requested_string(self):
        """Each Schedule's schedule_id is the very string object the caller asked for."""
        ids = ["".join(["TS-", "000001"]), "".join(["TS-", "000002"])]  # not interned, not literals
        rows = yield self.source.read(ids)
        self.assertEqual(sorted(rows), ids)
        for schedule_id in ids:
            self.assertIs(rows[schedule_id].schedule_id, schedule_id)

    @defer.inlineCallbacks
    def test_missing_ids_are_absent(self):
        """An ID with no row is simply not in the answer."""
        rows = yield self.source.read(["TS-000001", "TS-404"])
        self.assertEqual(list(rows), ["TS-000001"])
