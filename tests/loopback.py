"""A loopback HTTP server over a folder, for the download tests (no network): ``with serve(folder) as base_url``.

``serve(folder, handler=...)`` takes a handler class of this module's kind (e.g. one that corrupts what it sends);
every request path is kept in ``server.requests``.
"""
from __future__ import annotations

import functools
import http.server
import threading
from pathlib import Path


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files from its directory; records each request path on the server, logs nothing."""

    def log_message(self, *args) -> None:  # keep the test output clean
        pass

    def send_head(self):
        self.server.requests.append(self.path)
        return super().send_head()


class CorruptHandler(QuietHandler):
    """Serves every file with one bit flipped in its middle."""

    def do_GET(self) -> None:  # noqa: N802 - http.server API
        self.server.requests.append(self.path)
        body = bytearray(Path(self.directory, self.path.lstrip("/")).read_bytes())
        body[len(body) // 2] ^= 0x01
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(bytes(body))


class Server:
    def __init__(self, handler):
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.requests = []
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def requests(self) -> list[str]:
        return self.httpd.requests

    def __enter__(self) -> str:
        self.thread.start()
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


def serve(root: Path, handler: type[QuietHandler] = QuietHandler) -> Server:
    """A local HTTP server over ``root``."""
    return Server(functools.partial(handler, directory=str(root)))
