"""Job functions for the embedded default's schedules (run by an RQ worker, not by the daemon)."""


def hello(greeting: str = "hello", name: str = "world") -> str:
    """Return (and print) a greeting, so a newcomer sees a scheduled job run in `rq worker`."""
    message = f"{greeting}, {name}"
    print(message)
    return message
