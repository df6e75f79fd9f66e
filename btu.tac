# twistd -ny btu.tac -- the same daemon as `twistd -n btu`, configured by $BTU_SCHEDULER_CONFIG
# (default /etc/btu_scheduler/btu_scheduler.toml); set BTU_EMBEDDED=1 for the embedded default.
import os

from twisted.application import service

from btu_twisted.tap import Options, makeService

options = Options()
options.parseOptions(["--embedded"] if os.environ.get("BTU_EMBEDDED") else [])
application = service.Application("btu")
makeService(options).setServiceParent(application)
