"""A test webhook receiver for Alertmanager: appends every POSTed body as one JSON line to
/tmp/received.jsonl. Runs in a container on the stack's monitoring network only (no published
port); the smoke test reads the file with `docker exec`."""

import json
from http.server import BaseHTTPRequestHandler, HTTPServer

LOG = "/tmp/received.jsonl"


class Receiver(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 (http.server's naming)
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        with open(LOG, "a") as handle:
            handle.write(json.dumps(json.loads(body)) + "\n")
        self.send_response(200)
        self.end_headers()

    def log_message(self, fmt, *args):
        print(fmt % args, flush=True)


if __name__ == "__main__":
    open(LOG, "a").close()
    HTTPServer(("0.0.0.0", 9000), Receiver).serve_forever()
