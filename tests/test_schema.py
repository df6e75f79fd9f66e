"""Schema detection against a real MariaDB: which BTU generation's columns a site database has."""

from __future__ import annotations

from twisted.trial import unittest

from btu_twisted.schema import Schema, detect_schema
from tests.support.servers import fresh_database, shared_mariadb


class DetectSchemaTests(unittest.TestCase):
    """detect_schema reads information_schema, never assumes a column."""

    def detect(self, *statements) -> Schema:
        name = fresh_database(testcase=self)
        conn = shared_mariadb().connect(name)
        self.addCleanup(conn.close)
        with conn.cursor() as cursor:
            for statement in statements:
                cursor.execute(statement)
            return detect_schema(cursor)

    def test_btu_15_1_0_schema_has_no_zone_column(self):
        """The tables of BTU <= 15.1.0: schedule table present, no cron_timezone, no task log."""
        schema = self.detect()
        self.assertEqual((schema.schedule_table, schema.cron_timezone, schema.task_log), (True, False, False))
        self.assertEqual(schema.generation, "BTU <= 15.1.0")

    def test_cron_timezone_and_task_log_are_found(self):
        """A cron_timezone column and a `tabBTU Task Log` table are detected (BTU 15.1.1+)."""
        schema = self.detect(
            "ALTER TABLE `tabBTU Task Schedule` ADD COLUMN `cron_timezone` varchar(140)",
            "ALTER TABLE `tabBTU Task Schedule` ADD COLUMN `minute` int, ADD COLUMN `day_of_week` varchar(20)",
            "CREATE TABLE `tabBTU Task Log` (`name` varchar(140) PRIMARY KEY, `task` varchar(140), "
            "`success_fail` varchar(140))")
        self.assertEqual((schema.cron_timezone, schema.task_log), (True, True))
        self.assertEqual(schema.structured_columns, frozenset({"minute", "day_of_week"}))
        self.assertEqual(schema.generation, "BTU 15.1.1+")

    def test_database_without_btu_tables(self):
        """A site without BTU installed reports no schedule table."""
        schema = self.detect("DROP TABLE `tabBTU Task Schedule`")
        self.assertFalse(schema.schedule_table)
        self.assertEqual(schema.generation, "no BTU tables")
