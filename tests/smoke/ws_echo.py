"""A WebSocket test upstream for the gateway's /socket.io/ route (test_02): stands where the api would.

An upgrade request (Upgrade: websocket, Connection: upgrade) gets 101 Switching Protocols with the
RFC 6455 accept key, then every byte is echoed back; any other request gets 200 and JSON of the
request line and headers as they arrived (so a test sees what the gateway forwarded). Standard
library only; it listens on WS_ECHO_PORT (5001: the api's port; not PORT, which images set), and
stops by itself after WS_ECHO_MAX_SECONDS (120) so nothing outlives a failed test.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import threading

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455, section 1.3


def handle(conn: socket.socket) -> None:
    conn.settimeout(10)
    data = b""
    while b"\r\n\r\n" not in data and len(data) < 65536:
        chunk = conn.recv(4096)
        if not chunk:
            return
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    upgrade = headers.get("upgrade", "").lower() == "websocket"
    connection = "upgrade" in [t.strip() for t in headers.get("connection", "").lower().split(",")]
    if upgrade and connection and headers.get("sec-websocket-key"):
        accept = base64.b64encode(hashlib.sha1((headers["sec-websocket-key"] + GUID).encode()).digest()).decode()
        conn.sendall(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      f"Sec-WebSocket-Accept: {accept}\r\n\r\n").encode())
        if rest:
            conn.sendall(rest)
        while True:
            chunk = conn.recv(4096)
            if not chunk:
                return
            conn.sendall(chunk)
    status = "200 OK" if not upgrade else "400 Bad Request"
    body = json.dumps({"served_by": "ws_echo", "request": lines[0], "headers": headers}).encode()
    conn.sendall(f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                 "Connection: close\r\n\r\n".encode() + body)


def main() -> None:
    server = socket.create_server(("0.0.0.0", int(os.environ.get("WS_ECHO_PORT", "5001"))))
    threading.Timer(float(os.environ.get("WS_ECHO_MAX_SECONDS", "120")), lambda: os._exit(0)).start()
    while True:
        conn, _ = server.accept()
        threading.Thread(target=lambda c=conn: (handle(c), c.close()), daemon=True).start()


if __name__ == "__main__":
    main()
