"""benchmarks.loadgen.KeepAlive against a real socket server on 127.0.0.1 that misbehaves on purpose:
a reused connection closed under a GET is sent once more (counted apart); a new connection that
fails, or a failure after the status line, is a failure."""

from __future__ import annotations

import http.client
import socket
import sys
import threading
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from benchmarks.loadgen import KeepAlive, Load  # noqa: E402

ANSWER = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 16\r\nConnection: keep-alive\r\n\r\n"
BODY = b'{"version": "x"}'


def read_request(conn: socket.socket) -> bool:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            return False
        data += chunk
    return True


class Server:
    """Accepts connections on 127.0.0.1; `answered` requests per connection get an answer, the next
    one is read and the connection closed under it (what a reloading nginx does to a kept-alive
    connection); `partial` sends the status line and headers and half the body, then closes."""

    def __init__(self, answered: int, partial: bool = False, max_connections: int = 50):
        self.answered, self.partial, self.max_connections = answered, partial, max_connections
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.stop = threading.Event()
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        accepted = 0
        while accepted < self.max_connections and not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            accepted += 1
            self.connections += 1
            with conn:
                conn.settimeout(10)
                for _ in range(self.answered):
                    if not read_request(conn):
                        break
                    conn.sendall(ANSWER + (BODY[:8] if self.partial else BODY))
                    if self.partial:
                        break
                else:
                    read_request(conn)  # the request arrived; the connection closes under it

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=10)
        self.sock.close()


@pytest.fixture
def server_factory():
    made: list[Server] = []

    def make(*args, **kwargs) -> Server:
        made.append(Server(*args, **kwargs))
        return made[-1]

    yield make
    for server in made:
        server.close()


def test_reused_connection_closed_under_a_get_is_sent_again_and_counted(server_factory):
    server = server_factory(answered=1)
    client = KeepAlive(f"http://127.0.0.1:{server.port}", timeout=10)
    answers = [client.get("/ping") for _ in range(3)]
    client.close()
    assert answers == [(200, BODY)] * 3
    assert client.retried == {"RemoteDisconnected": 2}
    assert server.connections == 3


def test_a_new_connection_closed_under_a_get_is_a_failure(server_factory):
    server = server_factory(answered=0)
    client = KeepAlive(f"http://127.0.0.1:{server.port}", timeout=10)
    with pytest.raises(ConnectionError):
        client.get("/ping")
    assert client.retried == {}
    assert server.connections == 1


def test_a_failure_after_the_status_line_is_not_sent_again(server_factory):
    server = server_factory(answered=1, partial=True)
    client = KeepAlive(f"http://127.0.0.1:{server.port}", timeout=10)
    with pytest.raises(http.client.IncompleteRead):
        client.get("/ping")
    assert client.retried == {}
    assert server.connections == 1


def run_load(port: int, requests: int):
    """A one-thread Load of `requests` GETs, waited for (bounded), then stopped."""
    load = Load(f"http://127.0.0.1:{port}", ["/ping"], threads=1, seconds=30, max_requests=requests).start()
    for worker in load._workers:
        worker.join(timeout=30)
    return load.stop()


def test_load_counts_retries_apart_from_failures(server_factory):
    server = server_factory(answered=2, max_connections=200)
    result = run_load(server.port, 12)
    assert (result.ok, result.failed) == (12, 0), result.summary()
    assert result.retried == {"RemoteDisconnected": 5}, result.summary()
    assert "sent again after an idle close" in result.summary()


def test_load_counts_a_refused_connection_as_a_failure():
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]  # closed when the block ends: nothing listens there
    result = run_load(port, 3)
    assert (result.ok, result.failed) == (0, 3)
    assert result.failures == ["/ping: ConnectionRefusedError"] * 3
    assert result.retried == {}


def test_keepalive_takes_only_plain_http():
    with pytest.raises(ValueError, match="http://host:port"):
        KeepAlive("https://127.0.0.1:8443")
