"""The Redis RPC client of BTU 15.1.1+, as the app runs it: a fresh response key, LPUSH, BLPOP 5 s."""

from __future__ import annotations

import json
import uuid

COMMANDS_KEY = "btu:scheduler:commands"  # spelled out on purpose: the app's contract, not our constant
RESPONSE_KEY_PREFIX = "btu:scheduler:rpc:"
BTU_APP_WAIT_SECS = 5


def response_key() -> str:
    """A key like the app's: the prefix and a UUID."""
    return f"{RESPONSE_KEY_PREFIX}{uuid.uuid4()}"


def command(request_type, request_content=None, key: str | None = None) -> str:
    """The JSON the app pushes; without `key` it is the app's poll mode (no response_key)."""
    message = {"request_type": request_type, "request_content": request_content}
    if key is not None:
        message["response_key"] = key
    return json.dumps(message)


def btu_rpc_request(client, request_type, request_content=None,
                    wait: float = BTU_APP_WAIT_SECS) -> dict | None:
    """LPUSH a command with a fresh response key and BLPOP the ACK; None when nothing came in time."""
    key = response_key()
    client.lpush(COMMANDS_KEY, command(request_type, request_content, key))
    found = client.blpop([key], timeout=wait)
    return None if found is None else json.loads(found[1])
