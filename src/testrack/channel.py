"""The controller's end of a worker's socket: it never blocks, whatever the message size.

A controller that blocks in ``send`` while its worker blocks in ``send`` too (each
writing a message larger than the socket buffer, neither reading) hangs the run
forever. So the controller's end is non-blocking: :meth:`Channel.send` writes what the
socket takes now and keeps the rest, which the run loop writes when the socket is
writable again, while it goes on reading. Because the controller always reads, a
worker may keep using a plain blocking :class:`multiprocessing.connection.Connection`:
the frames are the same (a 4-byte big-endian length, or -1 and an 8-byte length, then
a pickle), so each side reads what the other writes.
"""

from __future__ import annotations

import os
import pickle
import socket
import struct
from collections import deque
from typing import Any

#: ``TESTRACK_SOCKET_BUFFER=BYTES`` shrinks both ends' kernel buffers (stress tests of partial
#: writes and reads); unset, the kernel's defaults apply.
BUFFER_ENV = "TESTRACK_SOCKET_BUFFER"
#: At most this much is read from one worker per call, so one chatty worker cannot starve the rest.
READ_BUDGET = 4 << 20

_SHORT = struct.Struct("!i")
_LONG = struct.Struct("!Q")


def frame(message: Any) -> bytes:
    """A message as multiprocessing.connection frames it."""
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    if len(data) > 0x7FFFFFFF:
        return _SHORT.pack(-1) + _LONG.pack(len(data)) + data
    return _SHORT.pack(len(data)) + data


def socket_pair() -> tuple[socket.socket, socket.socket]:
    """(controller's end, worker's end), with the stress-test buffer size applied when asked."""
    ours, theirs = socket.socketpair()
    size = os.environ.get(BUFFER_ENV)
    if size:
        for sock in (ours, theirs):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, int(size))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, int(size))
    return ours, theirs


class Channel:
    """Framed, pickled messages over a non-blocking socket: sends queue, reads never wait."""

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self._sock = sock
        self._out: deque[memoryview] = deque()
        self._in = bytearray()
        self.closed = False

    def fileno(self) -> int:
        return self._sock.fileno()

    @property
    def wants_write(self) -> bool:
        """Bytes are waiting for the socket to take them."""
        return bool(self._out)

    def send(self, message: Any) -> bool:
        """Queue ``message`` and write what the socket takes now; False if the peer is gone."""
        if self.closed:
            return False
        self._out.append(memoryview(frame(message)))
        return self.flush()

    def flush(self) -> bool:
        """Write queued bytes until the socket is full; False if the peer is gone."""
        while self._out:
            head = self._out[0]
            try:
                sent = self._sock.send(head)
            except (BlockingIOError, InterruptedError):
                return True
            except OSError:
                self._out.clear()
                return False
            if sent == len(head):
                self._out.popleft()
            else:
                self._out[0] = head[sent:]
        return True

    def receive(self) -> list[Any]:
        """Every whole message that has arrived; raises EOFError once the peer closed and
        everything it sent was returned."""
        eof = False
        budget = READ_BUDGET
        while budget > 0:
            try:
                chunk = self._sock.recv(min(budget, 1 << 20))
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                eof = True
                break
            if not chunk:
                eof = True
                break
            self._in += chunk
            budget -= len(chunk)
        messages = self._parse()
        if eof and not messages:
            self.closed = True
            raise EOFError
        return messages

    def _parse(self) -> list[Any]:
        messages = []
        buf = self._in
        pos = 0
        while True:
            if len(buf) - pos < 4:
                break
            (size,) = _SHORT.unpack_from(buf, pos)
            start = pos + 4
            if size == -1:
                if len(buf) - start < 8:
                    break
                (size,) = _LONG.unpack_from(buf, start)
                start += 8
            if len(buf) - start < size:
                break
            messages.append(pickle.loads(buf[start : start + size]))
            pos = start + size
        if pos:
            del buf[:pos]
        return messages

    def close(self) -> None:
        self.closed = True
        self._out.clear()
        self._sock.close()
