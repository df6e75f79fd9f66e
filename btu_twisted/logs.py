# -*- test-case-name: tests.test_config -*-
"""The daemon's log level: `tracing_level` (Rust names) filters the events of btu_twisted's loggers.

Every module logs through `Logger(observer=OBSERVER)`, a filter in front of the global publisher,
so the level applies to our events whatever observer twistd installed.
"""

from twisted.logger import (FilteringLogObserver, LogLevel, LogLevelFilterPredicate,
                            globalLogPublisher)

_LEVELS = {"TRACE": LogLevel.debug, "DEBUG": LogLevel.debug, "INFO": LogLevel.info,
           "WARN": LogLevel.warn, "WARNING": LogLevel.warn, "ERROR": LogLevel.error,
           "CRITICAL": LogLevel.critical}

_PREDICATE = LogLevelFilterPredicate(defaultLogLevel=LogLevel.info)
OBSERVER = FilteringLogObserver(lambda event: globalLogPublisher(event), [_PREDICATE])


def set_level(name: str) -> None:
    """Apply a Rust-style level name (TRACE, DEBUG, INFO, WARN, ERROR)."""
    _PREDICATE.setLogLevelForNamespace("", _LEVELS[name.upper()])


def debugging() -> bool:
    """Whether debug events pass, so a per-row debug line costs nothing when they do not: a filtered
    event is still built and filtered (13 % of a 100 000-row refresh, bench/bench_planning.py)."""
    return _PREDICATE.logLevelForNamespace("") <= LogLevel.debug


def journal_observer():
    """A stdout observer without timestamps, for `twistd --logger btu_twisted.logs.journal_observer`
    under systemd, whose journal stamps every line itself (no double timestamps)."""
    import sys

    from twisted.logger import FileLogObserver, formatEvent

    def line(event) -> str:
        text = formatEvent(event)
        if "log_failure" in event:
            text += "\n" + event["log_failure"].getTraceback()
        level = event.get("log_level")
        return f"[{event.get('log_namespace', '-')}#{level.name if level else '-'}] {text}\n"

    return FileLogObserver(sys.stdout, line)
