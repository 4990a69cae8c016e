"""A deliberately rude HTTP/2 gRPC client: sends calls, never reads their answers, then resets the
TCP connection (SO_LINGER 0: an RST, no RST_STREAM, no GOAWAY), as a client whose process or
network died would.

Only what that needs (RFC 9113 framing, RFC 7541 literal header fields without Huffman coding):
it honours the server's flow-control windows when sending, acknowledges SETTINGS and PING, and
never sends WINDOW_UPDATE, so the server can send at most the initial window on each stream (a
client that stopped reading). It notes which streams the server ended before the reset; it does not
decode their headers (it never needs the status: these calls are "gave up" in the reconciliation).
"""

import asyncio
import socket
import struct

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE = 0, 1, 3, 4, 6, 7, 8
END_STREAM, END_HEADERS, ACK = 0x1, 0x4, 0x1
SETTINGS_INITIAL_WINDOW_SIZE = 0x4
MAX_FRAME = 16384


def frame(ftype, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(">I", stream) + payload


def hpack_int(value, prefix_bits, first=0):
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    out, value = [first | limit], value - limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    return bytes(out + [value])


def hpack_str(s):
    b = s.encode()
    return hpack_int(len(b), 7) + b


def header_block(authority, path, timeout_ms=None):
    """HEADERS of a gRPC call: static-table :method POST / :scheme http, the rest literal."""
    out = b"\x83\x86"                                   # :method POST, :scheme http (indexed)
    out += hpack_int(4, 4) + hpack_str(path)            # :path (name index 4), not indexed
    out += hpack_int(1, 4) + hpack_str(authority)       # :authority (name index 1)
    out += hpack_int(31, 4) + hpack_str("application/grpc")  # content-type (index 31)
    out += b"\x00" + hpack_str("te") + hpack_str("trailers")
    if timeout_ms is not None:
        out += b"\x00" + hpack_str("grpc-timeout") + hpack_str(f"{max(1, int(timeout_ms))}m")
    return out


def grpc_message(payload):
    return b"\x00" + struct.pack(">I", len(payload)) + payload


class RudeConnection:
    """One TCP connection carrying several calls; `reset()` kills it without a goodbye."""

    def __init__(self, host, port, recv_window=65535):
        self.host, self.port, self.recv_window = host, port, recv_window
        self.send_conn = 65535
        self.send_initial = 65535
        self.send_stream = {}
        self.ended = set()        # streams the server ended (END_STREAM or RST_STREAM) before reset
        self.received = 0
        self.goaway = False
        self.next_stream = 1
        self._changed = asyncio.Event()
        self._settings = asyncio.Event()

    async def open(self):
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        settings = struct.pack(">HI", SETTINGS_INITIAL_WINDOW_SIZE, self.recv_window)
        self.writer.write(PREFACE + frame(SETTINGS, 0, 0, settings))
        self._task = asyncio.ensure_future(self._read_loop())
        await asyncio.wait_for(self._settings.wait(), 30)

    async def _read_loop(self):
        try:
            while True:
                head = await self.reader.readexactly(9)
                length = int.from_bytes(head[:3], "big")
                ftype, flags = head[3], head[4]
                stream = int.from_bytes(head[5:9], "big") & 0x7FFFFFFF
                payload = await self.reader.readexactly(length) if length else b""
                self._on_frame(ftype, flags, stream, payload)
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            self.goaway = True
            self._changed.set()

    def _on_frame(self, ftype, flags, stream, payload):
        if ftype == SETTINGS and not flags & ACK:
            for i in range(0, len(payload) - 5, 6):
                key, value = struct.unpack(">HI", payload[i:i + 6])
                if key == SETTINGS_INITIAL_WINDOW_SIZE:
                    delta = value - self.send_initial
                    self.send_initial = value
                    for s in self.send_stream:
                        self.send_stream[s] += delta
            self.writer.write(frame(SETTINGS, ACK, 0))
            self._settings.set()
        elif ftype == PING and not flags & ACK:
            self.writer.write(frame(PING, ACK, 0, payload))
        elif ftype == WINDOW_UPDATE:
            inc = int.from_bytes(payload[:4], "big") & 0x7FFFFFFF
            if stream == 0:
                self.send_conn += inc
            elif stream in self.send_stream:
                self.send_stream[stream] += inc
        elif ftype == DATA:
            self.received += length_of(payload)
        elif ftype in (HEADERS, RST_STREAM) and (flags & END_STREAM or ftype == RST_STREAM):
            self.ended.add(stream)
        elif ftype == GOAWAY:
            self.goaway = True
        self._changed.set()

    async def start_call(self, path, messages, end_stream=True, timeout_ms=None):
        """Sends HEADERS and the messages (half-closing when `end_stream`); returns the stream id."""
        sid = self.next_stream
        self.next_stream += 2
        self.send_stream[sid] = self.send_initial
        block = header_block(f"{self.host}:{self.port}", path, timeout_ms)
        self.writer.write(frame(HEADERS, END_HEADERS | (0 if messages or not end_stream else END_STREAM),
                                sid, block))
        data = b"".join(grpc_message(m) for m in messages)
        await self._send_data(sid, data, end_stream)
        return sid

    async def _send_data(self, sid, data, end_stream):
        pos = 0
        while pos < len(data):
            room = min(self.send_conn, self.send_stream[sid], MAX_FRAME, len(data) - pos)
            if room <= 0:
                if self.goaway:
                    raise ConnectionError("connection closed while sending")
                self._changed.clear()
                await asyncio.wait_for(self._changed.wait(), 30)
                continue
            last = pos + room == len(data)
            self.writer.write(frame(DATA, END_STREAM if last and end_stream else 0, sid, data[pos:pos + room]))
            self.send_conn -= room
            self.send_stream[sid] -= room
            pos += room
            await self.writer.drain()
        await self.writer.drain()

    def reset(self):
        """Closes the socket with an RST (no HTTP/2 goodbye)."""
        sock = self.writer.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
        self.writer.transport.abort()
        self._task.cancel()


def length_of(payload):
    return len(payload)
