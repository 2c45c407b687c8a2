"""gRPC (unary) over HTTP/2 on the server's own asyncio loop: the default transport of ``--grpc-port``.

Why not ``grpc.aio.server``: its core polls on its own threads and hands every call to the event loop
through a completion queue, a thread hop and several Python objects per RPC; measured here that is ~300 µs
of CPU per call for a constant answer, three times what a whole HTTP v2 JSON inference cost on uvicorn.
This module is a plain ``asyncio.Protocol`` that speaks the part of HTTP/2 (RFC 9113) a gRPC server
needs: the preface, SETTINGS (acknowledged, the peer's window and frame size honoured), PING answers, flow
control both ways (our windows open to 2^31-1 and re-opened as data is read; the peer's respected, a
response waits for WINDOW_UPDATE), HEADERS + CONTINUATION (decoded with ``hpack``, which keeps the dynamic
table, unless the same bytes came before and the table has not changed since: see ``_path_of``; padding and
priority fields skipped), DATA, RST_STREAM and GOAWAY. A PING's ACK goes out with the next response's write
when one follows within ``PING_HOLD_S`` (grpc-go pings after most answers: one write per call, not two).
A call's message is parsed with the generated protobuf class and handed to the same ``InferenceServicer``
the grpc.aio server uses (same batcher, metrics, canary, errors); the answer's headers and trailers are
pre-encoded HPACK literals (no dynamic table on our side). No thread, no hop: one call is one loop turn
plus the batch it joins.
(The ``h2`` library does the same state machine in Python: measured ~280 µs of CPU per call, of which
~190 in h2; this framing costs a few µs.)

Unary methods only (the v2 service has no streaming ones); messages are uncompressed (a compressed request
gets UNIMPLEMENTED, as the grpc-encoding it names is not accepted); at most ``MAX_MESSAGE_BYTES`` per message.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import struct
from typing import Any
from urllib.parse import quote

import grpc
from hpack import Decoder
from hpack.exceptions import HPACKError
from hpack.table import HeaderTable

log = logging.getLogger(__name__)

SERVICE = "inference.GRPCInferenceService"
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
MAX_WINDOW = 2**31 - 1
DEFAULT_WINDOW = 65535
MAX_HEADER_BLOCK = 64 * 1024
MAX_STREAMS = 1000
PING_HOLD_S = 0.002  # at most this long a PING's ACK waits to share a response's write (see _ping)
MAX_DETAILS = 4096  # grpc-message is cut to this many characters (a HEADERS frame must fit the peer's frame size)
# frame types, flags and error codes (RFC 9113 section 6, 7)
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
END_STREAM = ACK = 0x1
END_HEADERS, PADDED, PRIORITY_FLAG = 0x4, 0x8, 0x20
NO_ERROR, PROTOCOL_ERROR, FLOW_CONTROL_ERROR, FRAME_SIZE_ERROR, REFUSED_STREAM, COMPRESSION_ERROR = 0, 1, 3, 6, 7, 9
SETTINGS_INITIAL_WINDOW_SIZE, SETTINGS_MAX_FRAME_SIZE = 4, 5
_FRAME_HEAD = struct.Struct(">BHBBI")  # length (24 bits as 8 + 16), type, flags, stream id


def _frame(ftype: int, flags: int, sid: int, payload: bytes | memoryview = b"") -> bytes:
    n = len(payload)
    return _FRAME_HEAD.pack(n >> 16, n & 0xFFFF, ftype, flags, sid) + payload


def _hpack_int(value: int, prefix_bits: int) -> bytes:
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((value,))
    out = bytearray((limit,))
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _literal(name: bytes, value: bytes) -> bytes:
    """An HPACK literal header field without indexing, new name, no Huffman: never touches a dynamic table."""
    return b"\x00" + _hpack_int(len(name), 7) + name + _hpack_int(len(value), 7) + value


_RESPONSE_HEAD = b"\x88" + _literal(b"content-type", b"application/grpc")  # 0x88: static entry ":status: 200"
_OK_TRAILERS = _frame(HEADERS, END_STREAM | END_HEADERS, 0, _literal(b"grpc-status", b"0"))[9:]
_SETTINGS = _frame(SETTINGS, 0, 0, struct.pack(">HIHIHI", 3, MAX_STREAMS, SETTINGS_INITIAL_WINDOW_SIZE, MAX_WINDOW,
                                               6, MAX_HEADER_BLOCK))
_SETTINGS_ACK = _frame(SETTINGS, ACK, 0)
_OPEN_WINDOW = _frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", MAX_WINDOW - DEFAULT_WINDOW))


class _Table(HeaderTable):
    """hpack's dynamic table, counting its changes (an added entry, a new size)."""

    generation = 0

    def add(self, name: bytes, value: bytes) -> None:
        self.generation += 1
        super().add(name, value)

    @property
    def maxsize(self) -> int:
        return self._maxsize

    @maxsize.setter
    def maxsize(self, newmax: int) -> None:
        self.generation += 1
        HeaderTable.maxsize.fset(self, newmax)  # type: ignore[attr-defined]


class RpcAbort(Exception):
    """Raised by ``Context.abort``: the call ends with this status (as grpc.aio's ``abort`` does)."""

    def __init__(self, code: grpc.StatusCode, details: str):
        super().__init__(details)
        self.code = code
        self.details = details


class Context:
    """The part of ``grpc.aio.ServicerContext`` the v2 servicer uses."""

    __slots__ = ("initial_metadata",)

    def __init__(self) -> None:
        self.initial_metadata = b""  # HPACK block of the response's extra headers

    async def abort(self, code: grpc.StatusCode, details: str = "") -> None:
        raise RpcAbort(code, details)

    async def send_initial_metadata(self, metadata: Any) -> None:
        self.initial_metadata = b"".join(
            _literal(k.lower().encode(), v.encode() if isinstance(v, str) else v) for k, v in metadata)


def _status_block(code: grpc.StatusCode, details: str) -> bytes:
    block = _literal(b"grpc-status", b"%d" % code.value[0])
    if details:  # grpc-message is percent-encoded (gRPC over HTTP/2)
        block += _literal(b"grpc-message", quote(details[:MAX_DETAILS], safe=" !\"#$&'()*+,-./:;<=>?@[\\]^_`{|}~")
                          .encode())
    return block


class _Method:
    __slots__ = ("fast", "handler", "name", "request_type")

    def __init__(self, name: str, request_type: Any, handler: Any, fast: Any = None):
        self.name = name
        self.request_type = request_type
        self.handler = handler  # async (request, context) -> response
        # or, when set, from callbacks: fast(request, done) -> a future to cancel if the call goes away (or None),
        # done(response, code, details) called once: no task and no coroutine per call
        self.fast = fast


def method_table(servicer: Any, pb: Any) -> dict[bytes, _Method]:
    """``/inference.GRPCInferenceService/NAME`` -> the servicer's coroutine (and its ``fast_paths()`` callback form,
    if it has one), for the methods it implements."""
    service = pb.DESCRIPTOR.services_by_name[SERVICE.rsplit(".", 1)[1]]
    fast = servicer.fast_paths() if hasattr(servicer, "fast_paths") else {}
    table = {}
    for m in service.methods:
        impl = getattr(type(servicer), m.name, None)
        base = getattr(type(servicer).__mro__[1], m.name, None)
        if impl is None or impl is base:  # the generated base class: not implemented here
            continue
        table[f"/{SERVICE}/{m.name}".encode()] = _Method(m.name, getattr(pb, m.input_type.name),
                                                          getattr(servicer, m.name), fast.get(m.name))
    return table


class _NoTask:
    """A fast-path call's stand-in for its task until it gives its future (or when it was answered at once)."""

    __slots__ = ()

    def cancel(self) -> bool:
        return False


_STARTED = _NoTask()


class _Stream:
    __slots__ = ("body", "path", "pending", "task", "window")

    def __init__(self, path: bytes, window: int):
        self.path = path
        self.body = bytearray()
        self.task: asyncio.Future | _NoTask | None = None  # the call's task, or a fast-path call's future
        self.window = window  # what the peer lets us send on this stream
        self.pending: memoryview | None = None  # response bytes waiting for the peer's WINDOW_UPDATE


class _ConnectionError(Exception):
    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


class _Connection(asyncio.Protocol):
    def __init__(self, server: GrpcServer):
        self.server = server
        self.transport: Any = None
        self.streams: dict[int, _Stream] = {}
        self.decoder = Decoder()
        self.decoder.max_header_list_size = MAX_HEADER_BLOCK
        self.table = self.decoder.header_table = _Table()
        self.seen: dict[bytes, bytes] = {}  # header blocks decoded since the table last changed -> their :path
        self.buf = b""
        self.preface = False
        self.out: list[bytes] = []
        self.held = b""  # PING ACKs waiting to go out with the next write (at most PING_HOLD_S)
        self.hold_timer = False
        self.flush_soon = False  # answers of this event-loop step wait in ``out`` for one write at its end
        self.last_sid = 0
        self.cont: tuple[int, int, bytearray] | None = None  # a header block awaiting CONTINUATION frames
        self.recv_unacked = 0  # DATA bytes read since we last re-opened the connection window
        self.send_window = DEFAULT_WINDOW  # the peer's connection window
        self.peer_initial_window = DEFAULT_WINDOW
        self.peer_max_frame = 16384

    # -- transport ----------------------------------------------------------------------------------

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.server.connections.add(self)
        transport.write(_SETTINGS + _OPEN_WINDOW)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        for s in self.streams.values():
            if s.task is not None:
                s.task.cancel()
        self.streams.clear()

    def _flush(self) -> None:
        out = self.out
        if self.held:
            out.append(self.held)
            self.held = b""
        if out:
            if len(out) == 1:
                self.transport.write(out[0])
            else:
                self.transport.write(b"".join(out))
            out.clear()

    def close(self, code: int = NO_ERROR, message: str = "") -> None:
        """GOAWAY and close (after what is queued)."""
        if self.transport is None or self.transport.is_closing():
            return
        self.out.append(_frame(GOAWAY, 0, 0, struct.pack(">II", self.last_sid, code) + message.encode()[:256]))
        self._flush()
        self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self.buf:
            data = self.buf + data
        if not self.preface:
            if len(data) < len(PREFACE):
                if not PREFACE.startswith(data):
                    self.transport.close()
                self.buf = data
                return
            if not data.startswith(PREFACE):
                self.transport.close()  # not HTTP/2 with prior knowledge (gRPC clients always are)
                return
            self.preface = True
            data = data[len(PREFACE):]
        pos, n = 0, len(data)
        try:
            while n - pos >= 9:
                length = (data[pos] << 16) | (data[pos + 1] << 8) | data[pos + 2]
                if length > 16384:  # our SETTINGS_MAX_FRAME_SIZE is the default
                    raise _ConnectionError(FRAME_SIZE_ERROR, "frame over 16384 bytes")
                end = pos + 9 + length
                if end > n:
                    break
                self._frame(data[pos + 3], data[pos + 4], int.from_bytes(data[pos + 5:pos + 9], "big") & 0x7FFFFFFF,
                            data[pos + 9:end])
                pos = end
        except _ConnectionError as e:
            log.debug("gRPC connection closed: %s", e)
            self.close(e.code, str(e))
            return
        self.buf = data[pos:] if pos < n else b""
        self._send()

    def _send(self) -> None:
        """Write what handling a read queued; PING ACKs alone wait up to PING_HOLD_S for a response to go with.

        grpc-go clients send a PING after most responses they read (their window's BDP estimate), usually
        just before their next call: answered at once, that is a second write per call. Held for the next
        answer (whose round trip the ping measures anyway), it shares that write; a timer sends it by itself
        after PING_HOLD_S if no answer went first (an idle connection's keepalive PING waits that long).
        """
        if self.held and not self.out:
            if not self.hold_timer:
                self.hold_timer = True
                asyncio.get_running_loop().call_later(PING_HOLD_S, self._send_held)
            return
        self._flush()

    def _flush_now(self) -> None:
        self.flush_soon = False
        if self.transport is not None and not self.transport.is_closing():
            self._flush()

    def _send_held(self) -> None:
        self.hold_timer = False
        if self.held and self.transport is not None and not self.transport.is_closing():
            self._flush()

    # -- frames -------------------------------------------------------------------------------------

    def _frame(self, ftype: int, flags: int, sid: int, payload: bytes) -> None:
        if self.cont is not None and ftype != CONTINUATION:
            raise _ConnectionError(PROTOCOL_ERROR, "expected CONTINUATION")
        if ftype == DATA:
            self._data(flags, sid, payload)
        elif ftype == HEADERS:
            if sid == 0 or sid % 2 == 0:
                raise _ConnectionError(PROTOCOL_ERROR, "HEADERS on an invalid stream id")
            if flags & PADDED:
                pad = payload[0] if payload else 0
                if pad >= len(payload):
                    raise _ConnectionError(PROTOCOL_ERROR, "padding longer than the frame")
                payload = payload[1:len(payload) - pad]
            if flags & PRIORITY_FLAG:
                payload = payload[5:]
            if flags & END_HEADERS:
                self._headers(sid, flags, payload)
            else:
                self.cont = (sid, flags, bytearray(payload))
        elif ftype == CONTINUATION:
            if self.cont is None or self.cont[0] != sid:
                raise _ConnectionError(PROTOCOL_ERROR, "unexpected CONTINUATION")
            block = self.cont[2]
            block += payload
            if len(block) > MAX_HEADER_BLOCK:
                raise _ConnectionError(PROTOCOL_ERROR, f"header block over {MAX_HEADER_BLOCK} bytes")
            if flags & END_HEADERS:
                first_flags = self.cont[1]
                self.cont = None
                self._headers(sid, first_flags, bytes(block))
        elif ftype == SETTINGS:
            if not flags & ACK:
                self._settings(payload)
        elif ftype == WINDOW_UPDATE:
            if len(payload) != 4:
                raise _ConnectionError(FRAME_SIZE_ERROR, "WINDOW_UPDATE is 4 bytes")
            inc = int.from_bytes(payload, "big") & 0x7FFFFFFF
            if sid == 0:
                self.send_window += inc
                if self.send_window > MAX_WINDOW:
                    raise _ConnectionError(FLOW_CONTROL_ERROR, "connection window over 2^31-1")
            elif (s := self.streams.get(sid)) is not None:
                s.window += inc
            self._resume()
        elif ftype == PING:
            if len(payload) != 8:
                raise _ConnectionError(FRAME_SIZE_ERROR, "PING is 8 bytes")
            if not flags & ACK:
                self._ping(payload)
        elif ftype == RST_STREAM:
            s = self.streams.pop(sid, None)
            if s is not None and s.task is not None:
                s.task.cancel()
        elif ftype == GOAWAY:
            self._flush()
            self.transport.close()
            raise _ConnectionError(NO_ERROR, "peer sent GOAWAY")
        elif ftype == PUSH_PROMISE:
            raise _ConnectionError(PROTOCOL_ERROR, "a client cannot push")
        # PRIORITY and unknown types are ignored (RFC 9113 5.5)

    def _ping(self, payload: bytes) -> None:
        self.held += _frame(PING, ACK, 0, payload)  # sent when this read is handled: see _send

    def _settings(self, payload: bytes) -> None:
        if len(payload) % 6:
            raise _ConnectionError(FRAME_SIZE_ERROR, "SETTINGS length is not a multiple of 6")
        for i in range(0, len(payload), 6):
            key, value = struct.unpack_from(">HI", payload, i)
            if key == SETTINGS_INITIAL_WINDOW_SIZE:
                if value > MAX_WINDOW:
                    raise _ConnectionError(FLOW_CONTROL_ERROR, "initial window over 2^31-1")
                delta = value - self.peer_initial_window
                self.peer_initial_window = value
                for s in self.streams.values():
                    s.window += delta
            elif key == SETTINGS_MAX_FRAME_SIZE:
                if not 16384 <= value <= 16777215:
                    raise _ConnectionError(PROTOCOL_ERROR, "invalid SETTINGS_MAX_FRAME_SIZE")
                self.peer_max_frame = value
        self.out.append(_SETTINGS_ACK)
        self._resume()

    def _path_of(self, block: bytes) -> bytes:
        """The block's ``:path``; every block is decoded in order (it may update the connection's HPACK table).

        A block that left the dynamic table as it was (indexed fields and literals without indexing: what a
        client sending the same headers on each call sends once its table holds them, e.g. grpc-go without a
        deadline, h2load) means the same headers each time its bytes come again, as long as no block changed
        the table since: those are answered from ``self.seen`` without decoding again (hpack's decoder is
        pure Python: ~20 % of a call's CPU here). Any change to the table forgets them.
        """
        path = self.seen.get(block)
        if path is not None:
            return path
        generation = self.table.generation
        try:
            headers = self.decoder.decode(block, raw=True)
        except HPACKError as e:
            raise _ConnectionError(COMPRESSION_ERROR, f"bad header block: {e}") from None
        path = next((v for k, v in headers if k == b":path"), b"")
        if self.table.generation != generation:
            self.seen.clear()
        elif len(self.seen) < 64:
            self.seen[block] = path
        return path

    def _headers(self, sid: int, flags: int, block: bytes) -> None:
        path = self._path_of(bytes(block))
        s = self.streams.get(sid)
        if s is None:
            if sid <= self.last_sid:
                return  # a closed stream (we answered early or it was reset): nothing to do
            self.last_sid = sid
            s = _Stream(path, self.peer_initial_window)
            if len(self.streams) >= MAX_STREAMS:
                self.out.append(_frame(RST_STREAM, 0, sid, struct.pack(">I", REFUSED_STREAM)))
                return
            self.streams[sid] = s
        if flags & END_STREAM and s.task is None:
            self._dispatch(sid, s)

    def _data(self, flags: int, sid: int, payload: bytes) -> None:
        if sid == 0:
            raise _ConnectionError(PROTOCOL_ERROR, "DATA on stream 0")
        self.recv_unacked += len(payload)
        if self.recv_unacked >= MAX_WINDOW // 2:  # re-open the connection window (streams' never run out)
            self.out.append(_frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", self.recv_unacked)))
            self.recv_unacked = 0
        s = self.streams.get(sid)
        if s is None or s.task is not None:
            return
        if flags & PADDED:
            pad = payload[0] if payload else 0
            if pad >= len(payload):
                raise _ConnectionError(PROTOCOL_ERROR, "padding longer than the frame")
            payload = payload[1:len(payload) - pad]
        body = s.body
        body += payload
        if len(body) > self.server.max_message + 5:
            self._finish(sid, s, grpc.StatusCode.RESOURCE_EXHAUSTED,
                         f"request message over {self.server.max_message} bytes")
            self.out.append(_frame(RST_STREAM, 0, sid, struct.pack(">I", NO_ERROR)))
            return
        if flags & END_STREAM:
            self._dispatch(sid, s)

    # -- calls --------------------------------------------------------------------------------------

    def _dispatch(self, sid: int, s: _Stream) -> None:
        method = self.server.methods.get(s.path)
        if method is None:
            name = s.path.decode("latin-1")
            self._finish(sid, s, grpc.StatusCode.UNIMPLEMENTED, f"method {name} is not implemented by this server")
            return
        body = s.body
        if len(body) < 5:
            self._finish(sid, s, grpc.StatusCode.INTERNAL, "the request carries no gRPC message")
            return
        if body[0]:
            self._finish(sid, s, grpc.StatusCode.UNIMPLEMENTED, "compressed messages are not supported")
            return
        if int.from_bytes(body[1:5], "big") != len(body) - 5:
            self._finish(sid, s, grpc.StatusCode.INTERNAL, "a unary call carries exactly one whole message")
            return
        try:
            request = method.request_type.FromString(bytes(memoryview(body)[5:]))
        except Exception as e:
            self._finish(sid, s, grpc.StatusCode.INTERNAL, f"could not parse the request message: {e}")
            return
        s.body = bytearray()
        if method.fast is not None:
            s.task = method.fast(request, functools.partial(self._answered, sid, s)) or _STARTED
            return
        s.task = asyncio.get_running_loop().create_task(self._call(sid, s, method, request))

    def _answered(self, sid: int, s: _Stream, response: Any, code: grpc.StatusCode, details: str) -> None:
        """``done`` of a fast-path call."""
        if code is grpc.StatusCode.OK:
            self._respond(sid, s, response, b"")
        else:
            self._finish(sid, s, code, details)
            self._flush()

    async def _call(self, sid: int, s: _Stream, method: _Method, request: Any) -> None:
        ctx = Context()
        try:
            response = await method.handler(request, ctx)
        except RpcAbort as e:
            self._finish(sid, s, e.code, e.details, ctx.initial_metadata)
            self._flush()
            return
        except asyncio.CancelledError:
            return
        except Exception as e:  # a bug in a handler: the caller hears INTERNAL, the server keeps serving
            log.exception("error in gRPC %s", method.name)
            self._finish(sid, s, grpc.StatusCode.INTERNAL, f"internal error: {type(e).__name__}: {e}")
            self._flush()
            return
        self._respond(sid, s, response, ctx.initial_metadata)

    def _respond(self, sid: int, s: _Stream, response: Any, metadata: bytes) -> None:
        """Write a call's answer: its headers, the message (as far as the peer's windows allow), the OK trailers."""
        if self.streams.get(sid) is not s or self.transport.is_closing():
            return  # reset, or the connection went away meanwhile
        payload = response.SerializeToString()
        if len(payload) > self.server.max_message:
            self._finish(sid, s, grpc.StatusCode.RESOURCE_EXHAUSTED,
                         f"response message over {self.server.max_message} bytes")
            self._flush()
            return
        message = b"\x00" + len(payload).to_bytes(4, "big") + payload
        head = _frame(HEADERS, END_HEADERS, sid, _RESPONSE_HEAD + metadata)
        n = len(message)
        if n <= self.peer_max_frame and n <= self.send_window and n <= s.window:  # all of it at once
            self.send_window -= n
            del self.streams[sid]
            self.out.append(b"".join((head, _frame(DATA, 0, sid, message),
                                      _FRAME_HEAD.pack(0, len(_OK_TRAILERS), HEADERS, END_STREAM | END_HEADERS, sid),
                                      _OK_TRAILERS)))
            if not self.streams:  # the connection's last call in flight: write now
                self._flush()
            elif not self.flush_soon:
                # other calls in flight on this connection: a batch answers them in this same step, and their
                # answers share one write at its end (a write is a syscall and a wake-up of the client, per answer)
                self.flush_soon = True
                asyncio.get_running_loop().call_soon(self._flush_now)
            return
        self.out.append(head)
        s.pending = memoryview(message)
        self._send_pending(sid, s)
        self._flush()

    def _send_pending(self, sid: int, s: _Stream) -> None:
        """Send as much of the response as the peer's windows allow; the trailers once all of it is out."""
        data = s.pending
        assert data is not None
        while len(data):
            n = min(self.peer_max_frame, self.send_window, s.window, len(data))
            if n <= 0:
                s.pending = data
                return
            self.out.append(_frame(DATA, 0, sid, data[:n]))
            self.send_window -= n
            s.window -= n
            data = data[n:]
        s.pending = None
        self.out.append(_FRAME_HEAD.pack(0, len(_OK_TRAILERS), HEADERS, END_STREAM | END_HEADERS, sid) + _OK_TRAILERS)
        self.streams.pop(sid, None)

    def _resume(self) -> None:
        for sid, s in list(self.streams.items()):
            if s.pending is not None:
                if self.send_window <= 0:
                    return
                self._send_pending(sid, s)

    def _finish(self, sid: int, s: _Stream, code: grpc.StatusCode, details: str, metadata: bytes = b"") -> None:
        """A trailers-only answer: the status and message in the one HEADERS frame that ends the stream."""
        if self.streams.get(sid) is not s:
            return
        del self.streams[sid]
        self.out.append(_frame(HEADERS, END_STREAM | END_HEADERS, sid,
                               _RESPONSE_HEAD + metadata + _status_block(code, details)))


class GrpcServer:
    """The listening socket and its connections; ``stop(grace)`` as ``grpc.aio.Server.stop``."""

    def __init__(self, methods: dict[bytes, _Method], max_message: int):
        self.methods = methods
        self.max_message = max_message
        self.connections: set[_Connection] = set()
        self._server: asyncio.AbstractServer | None = None

    async def start(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self), host, port, reuse_address=True,
                                                backlog=1024)

    async def stop(self, grace: float | None = None) -> None:
        """Stop listening, GOAWAY every connection, let calls in flight finish for ``grace`` seconds, close."""
        if self._server is None:
            return
        self._server.close()
        for c in list(self.connections):
            if c.transport is not None and not c.transport.is_closing():
                c.out.append(_frame(GOAWAY, 0, 0, struct.pack(">II", c.last_sid, NO_ERROR)))
                c._flush()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (grace or 0)
        while any(c.streams for c in self.connections) and loop.time() < deadline:
            await asyncio.sleep(0.01)
        for c in list(self.connections):
            if c.transport is not None:
                c.transport.close()
        self._server = None
