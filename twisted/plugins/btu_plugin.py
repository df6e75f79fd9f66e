"""Registers `twistd btu`; the tap module is imported only when the plugin is used."""

from twisted.application.service import ServiceMaker

btu = ServiceMaker("btu", "btu_twisted.tap", "BTU scheduler daemon: BTU Task Schedules to Python RQ jobs", "btu")
