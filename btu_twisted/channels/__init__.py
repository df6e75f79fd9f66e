"""The control channels: the unix socket and loopback TCP (one text protocol) and Redis RPC.

Every channel hands requests to the one handler table of `btu_twisted.commands`.
"""
