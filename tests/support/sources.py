"""Schedule sources on the shared test servers, for tests that read rows through the real code."""

from __future__ import annotations

from btu_twisted.config import parse
from btu_twisted.sql_source import SQLSource


def shared_sql_source(testcase, extra_toml: str = "") -> SQLSource:
    """An SQLSource on the test's database (after `use_shared_servers`), closed when the test ends."""
    config, _ = parse(f'mysql_user = "root"\nmysql_database = "{testcase.database}"\n'
                      f'mysql_unix_socket = "{testcase.mariadb.socket_path}"\n{extra_toml}')
    source = SQLSource(config)
    testcase.addCleanup(source.close)
    return source
