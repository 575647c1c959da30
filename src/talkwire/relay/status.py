"""The supervisor's HTTP endpoint: ``/metrics`` (Prometheus) and ``/healthz``.

A stdlib threading HTTP server: it runs in the supervisor, which forwards no
packets, so it needs no event loop and cannot slow a worker.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from talkwire.relay.metrics import RelayCollector


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    registry: CollectorRegistry
    healthy: Callable[[], bool]


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        path = self.path.partition("?")[0]
        if path == "/metrics":
            self._reply(200, CONTENT_TYPE_LATEST, generate_latest(self.server.registry))
        elif path == "/healthz":
            ok = self.server.healthy()
            self._reply(200 if ok else 503, "text/plain", b"ok\n" if ok else b"worker down\n")
        else:
            self._reply(404, "text/plain", b"not found\n")

    def _reply(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        # Scrapes every few seconds would drown the relay's own log lines.
        return


class StatusServer:
    """Serves the workers' counter rows until ``close``; owns its thread."""

    def __init__(
        self,
        address: tuple[str, int],
        rows: Sequence[Sequence[int]],
        alive: Callable[[], Sequence[bool]],
    ) -> None:
        server_class = type(
            "_BoundServer",
            (_Server,),
            {"address_family": socket.AF_INET6 if ":" in address[0] else socket.AF_INET},
        )
        self._server: _Server = server_class(address, _Handler)
        registry = CollectorRegistry(auto_describe=False)
        registry.register(RelayCollector(rows, alive))
        self._server.registry = registry
        self._server.healthy = lambda: all(alive())
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="relay-status", daemon=True
        )

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return (str(host), int(port))

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()
