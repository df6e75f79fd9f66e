"""Read-only views of the scheduler shared by the `btu` CLI and the dashboard.

Every function here is blocking (redis-py, pymysql) and reads only: the CLI calls them directly,
the daemon's web listener calls them in a thread. One implementation of "what is planned, what ran
and how did it end".
"""
