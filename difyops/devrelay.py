"""Run a command and relay one TCP port to it from Docker's host-gateway address.

The development api listens on 127.0.0.1 only. The plugin daemon, in a container, calls it back
through host.docker.internal (Docker's host-gateway: the docker0 bridge address, reachable from
this host and its containers). With `dev.start-api --container-access` the api runs under this
wrapper, which listens on that bridge address and forwards each connection to 127.0.0.1.

    python -m difyops.devrelay --listen 172.17.0.1:5001 --to 127.0.0.1:5001 -- CMD ARGS...

It exits with the command's exit code; SIGINT, SIGTERM and SIGHUP are passed on to the command.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import subprocess
import sys


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        try:
            writer.close()
        except RuntimeError:
            pass


async def _serve(listen: tuple[str, int], target: tuple[str, int], proc: subprocess.Popen) -> int:
    async def handle(client_reader, client_writer):
        try:
            upstream_reader, upstream_writer = await asyncio.wait_for(asyncio.open_connection(*target), 10)
        except (OSError, asyncio.TimeoutError):
            client_writer.close()
            return
        await asyncio.gather(_pipe(client_reader, upstream_writer), _pipe(upstream_reader, client_writer))

    server = await asyncio.start_server(handle, *listen)
    print(f"[devrelay] {listen[0]}:{listen[1]} -> {target[0]}:{target[1]} (for containers)", flush=True)
    async with server:
        while proc.poll() is None:
            await asyncio.sleep(0.2)
    return proc.returncode


def _addr(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", required=True, help="HOST:PORT to listen on (the bridge address)")
    parser.add_argument("--to", required=True, help="HOST:PORT to forward to (127.0.0.1:PORT)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- the command to run")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given after --")
    proc = subprocess.Popen(command)

    def forward(signum, _frame):
        if proc.poll() is None:
            proc.send_signal(signum)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, forward)
    try:
        return asyncio.run(_serve(_addr(args.listen), _addr(args.to), proc))
    except OSError as exc:  # the bridge address cannot be bound: run without the relay
        print(f"[devrelay] not relaying ({exc}); containers cannot reach the api", file=sys.stderr, flush=True)
        return proc.wait()


if __name__ == "__main__":
    sys.exit(main())
