# -*- test-case-name: tests.test_channels -*-
"""The control channels a configuration asks for, checked before twistd daemonizes.

Each channel's preconditions (socket directory, file, group; TCP port) are checked here, in
makeService, so that a bad one exits 1 with one line in the foreground and in daemon mode alike,
before any thread, connection or child process exists.
"""

from __future__ import annotations

from functools import partial

from twisted.logger import Logger

from btu_twisted.channels.redis_rpc import RedisRPCListener, rpc_connection
from btu_twisted.channels.tcp import ControlTCPService, check_tcp_port
from btu_twisted.channels.text_protocol import ControlFactory
from btu_twisted.channels.unix_socket import ControlSocketService, check_socket_path
from btu_twisted.logs import OBSERVER

log = Logger(observer=OBSERVER)


def control_channels(reactor, config, commands, redis_settings, master_tracker=None,
                     socket: bool = True, shared: bool = True) -> list:
    """The services of every enabled channel, all answering through `commands.handlers()`.

    A bench daemon asks for each site's socket alone (`shared` False) and for the channels its
    sites share, Redis RPC and TCP, once (`socket` False). Raises ListenerError naming the
    setting when a channel could not listen.
    """
    handlers = commands.handlers()
    factory = ControlFactory(
        handlers, reactor, max_request_bytes=config.socket_max_request_bytes,
        idle_timeout=config.socket_idle_timeout_secs, max_connections=config.socket_max_connections,
        allowed_uids=config.socket_allowed_uids, allowed_gids=config.socket_allowed_gids)
    commands.control = factory  # status reports its connection count
    channels = []
    if socket and not config.disable_unix_socket:
        check_socket_path(config.socket_path, config.socket_file_group_owner)
        channels.append(ControlSocketService(reactor, config.socket_path, factory,
                                             mode=config.socket_mode, group=config.socket_file_group_owner))
    if shared and config.tcp_socket_port:
        check_tcp_port(config.tcp_socket_port)
        channels.append(ControlTCPService(reactor, config.tcp_socket_port, factory))
    if shared and not config.disable_redis_rpc:
        channels.append(RedisRPCListener(reactor, redis_settings, handlers,
                                         connect=partial(rpc_connection, clock=reactor, tracker=master_tracker),
                                         max_request_bytes=config.socket_max_request_bytes))
    if not channels and socket and shared:
        log.warn("every control channel is disabled: schedule edits wait for the next full refresh "
                 "(every {secs} s)", secs=config.full_refresh_internal_secs)
    return channels
