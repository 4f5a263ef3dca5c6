"""A TCP proxy on 127.0.0.1 for database faults: forward, ``pause`` (stop forwarding, keep every socket open:
a cable pull or a failover without reset, as the client sees it) and ``down`` (close every connection and
refuse new ones: the server is gone)."""

from __future__ import annotations

import socket
import threading

from sqlalchemy.engine import make_url


class PausableProxy:
    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)
        self.port = self.listener.getsockname()[1]
        self._forwarding = threading.Event()
        self._forwarding.set()
        self._down = False
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._socks: list[socket.socket] = []
        threading.Thread(target=self._accept, name="proxy-accept", daemon=True).start()

    @classmethod
    def for_url(cls, url: str) -> PausableProxy:
        u = make_url(url)
        return cls(u.host or "127.0.0.1", u.port or 5432)

    def url(self, url: str) -> str:
        """``url`` with host and port replaced by this proxy's."""
        return make_url(url).set(host="127.0.0.1", port=self.port).render_as_string(hide_password=False)

    def pause(self) -> None:
        self._forwarding.clear()

    def down(self) -> None:
        self._down = True
        with self._lock:
            socks, self._socks = self._socks, []
        for s in socks:
            _close(s)

    def resume(self) -> None:
        self._down = False
        self._forwarding.set()

    def close(self) -> None:
        self._closed.set()
        self.down()
        self.listener.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self._down:
                _close(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                _close(client)
                continue
            with self._lock:
                self._socks += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        src.settimeout(0.1)
        while not self._closed.is_set():
            if not self._forwarding.is_set():  # paused: read nothing, send nothing, close nothing
                self._forwarding.wait(0.1)
                continue
            try:
                data = src.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                break
            if not data:
                break
            try:
                dst.sendall(data)
            except OSError:
                break
        _close(src)
        _close(dst)


def _close(s: socket.socket) -> None:
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    s.close()
