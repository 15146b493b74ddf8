"""One app node of the example (app.py starts two): a tiny backend service.

  /healthz        "ok" (the pool's active health check)
  /price?item=N   {"node": ..., "item": N, "price": ...} after ~5 ms of "work"

    NODE_ID=web-1 python examples/python/node.py 8081
"""

from __future__ import annotations

import json
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

NODE = os.environ.get("NODE_ID", "node")


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        url = urlparse(self.path)
        if url.path == "/healthz":
            body, status = b'"ok"', 200
        elif url.path == "/price":
            time.sleep(0.005)
            item = int(parse_qs(url.query).get("item", ["0"])[0])
            body, status = json.dumps({"node": NODE, "item": item, "price": round(10 + item * 1.25, 2)}).encode(), 200
        else:
            body, status = b'"not found"', 404
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


if __name__ == "__main__":
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
