"""A TCP proxy in front of a test redis-server that holds a refresh claim,
or that slows the server's answers down as a slow link would.

Hand-written (the standard library's sockets, a thread per direction)
because no maintained package offers a proxy that can stop one command at
a chosen moment: it forwards bytes untouched, except that a client chunk
naming a refresh lock first passes a :class:`ClaimGate`, and that with
``paced = (size, seconds)`` the server's bytes pause for ``seconds`` after
every ``size`` of them, and that :meth:`GateProxy.hold` stops the server's
bytes where they are (a replication link cut: the replica gets nothing the
master sends after it) until :meth:`GateProxy.release`."""

from __future__ import annotations

import socket
import threading
import time

from tests.refresh_claim_race import ClaimGate

#: What every refresh-lock name holds; the lookup (MGET) never names one.
REFRESH_MARKER = b"restflow:refresh:"


class GateProxy:
    """Listens on a free 127.0.0.1 port and forwards to ``upstream_port``."""

    def __init__(
        self,
        upstream_port: int,
        gate: ClaimGate | None = None,
        *,
        paced: tuple[int, float] | None = None,
    ) -> None:
        self.upstream_port = upstream_port
        self.gate = gate
        self.paced = paced
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        #: Set while the server's bytes flow; cleared by ``hold``.
        self._flowing = threading.Event()
        self._flowing.set()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:  # closed
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            except OSError:  # the server is gone: so is this connection
                client.close()
                continue
            for sock in (client, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self.sockets.append(sock)
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, from_client: bool) -> None:
        size, pause = (None, 0.0) if from_client or self.paced is None else self.paced
        since_pause = 0
        try:
            while chunk := source.recv(65536):
                if from_client and self.gate is not None and REFRESH_MARKER in chunk:
                    self.gate.pass_through()
                if not from_client:
                    # A chunk read after ``hold`` waits; after ``close``
                    # it is dropped, never delivered.
                    self._flowing.wait()
                    if self._closed:
                        break
                sink.sendall(chunk)
                since_pause += len(chunk)
                if size is not None and since_pause >= size:
                    time.sleep(pause)  # the slow link, not a synchronisation
                    since_pause = 0
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def hold(self) -> None:
        """Holds every byte the server sends from now on (each in the
        proxy, read but not passed on) until ``release``. For a replica
        connected through the proxy: the master's replication stream
        stops reaching it, while the link stays up."""
        self._flowing.clear()

    def release(self) -> None:
        """Lets the held bytes, and all later ones, through."""
        self._flowing.set()

    def close(self) -> None:
        self._closed = True
        self._flowing.set()
        self.listener.close()
        for sock in self.sockets:
            sock.close()
