"""An independent model of what the control protocol should make of a byte stream, for fuzz tests."""

import json


def first_complete_object(payload: bytes, limit: int):
    """The shortest prefix of `payload` within `limit` bytes that is a complete JSON object,
    parsed; None when there is none (the daemon must then answer `Error:`)."""
    for end in range(1, min(len(payload), limit) + 1):
        if payload[end - 1:end] != b"}":
            continue
        try:
            value = json.loads(payload[:end].decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            continue
        if isinstance(value, dict):
            return value
    return None
