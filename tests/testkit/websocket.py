"""An RFC 6455 WebSocket upgrade through the gateway on 127.0.0.1, by hand (no client library):
what /socket.io/ answers and whether one frame comes back."""

from __future__ import annotations

import base64
import os
import socket
import struct


def websocket_echo(port: int) -> tuple[str, bytes, bytes]:
    """An RFC 6455 upgrade on /socket.io/ through the gateway, one masked text frame, its echo."""
    message = f"across-{os.urandom(3).hex()}".encode()
    key = base64.b64encode(os.urandom(16)).decode()
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        sock.sendall((f"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                      f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head and len(head) < 65536:
            chunk = sock.recv(4096)
            if not chunk:
                break
            head += chunk
        status, _, data = head.partition(b"\r\n\r\n")
        if not status.startswith(b"HTTP/1.1 101"):
            return status.split(b"\r\n", 1)[0].decode(), message, b""
        mask = os.urandom(4)
        sock.sendall(bytes([0x81, 0x80 | len(message)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(message)))
        while len(data) < 2:
            data += sock.recv(4096)
        length, offset = data[1] & 0x7F, 2
        if length == 126:
            length, offset = struct.unpack("!H", data[2:4])[0], 4
        while len(data) < offset + length:
            data += sock.recv(4096)
        return f"101 (first frame {data[:2].hex()})", message, data[offset:offset + length]
