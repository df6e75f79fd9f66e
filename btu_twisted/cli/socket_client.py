# -*- test-case-name: tests.test_cli -*-
"""Talk to a running daemon over its control socket, as the BTU app does."""

from __future__ import annotations

import json
import socket

CLIENT_TIMEOUT_SECS = 10.0
MAX_REPLY_BYTES = 1 << 20


def exchange(socket_path: str, payload: dict, timeout: float = CLIENT_TIMEOUT_SECS) -> bytes:
    """Send one JSON request and read the raw reply until the daemon closes the connection."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(socket_path)
        sock.sendall(json.dumps(payload).encode("utf-8"))
        chunks = []
        while sum(map(len, chunks)) < MAX_REPLY_BYTES:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


def request(socket_path: str, request_type: str, content=None) -> str:
    """Send one request the way the BTU app does and return the daemon's text reply."""
    reply = exchange(socket_path, {"request_type": request_type, "request_content": content})
    return reply.decode("utf-8", "replace")
