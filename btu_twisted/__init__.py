"""btu_twisted: a Twisted scheduler daemon that turns BTU Task Schedules into Python RQ jobs."""

__version__ = "0.1.0"
