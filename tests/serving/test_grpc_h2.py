"""The own HTTP/2 gRPC server (``serving/grpc_h2.py``) byte by byte, over a raw socket to a real ``mlstack serve``:
what no stock client shows on demand (HPACK dynamic-table changes between identical header blocks, PING answers
on an idle and on a busy connection, a call reset before its batch ran)."""

from __future__ import annotations

import socket
import struct
import time

import pytest
from tritonclient.grpc import service_pb2 as pb

from tests.utils.http import get, metric  # (mlstack's own stubs clash with it in one process)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING = 0, 1, 3, 4, 6
END_STREAM, END_HEADERS, ACK = 0x1, 0x4, 0x1
SERVICE = b"/inference.GRPCInferenceService/"
EMPTY_MESSAGE = b"\x00\x00\x00\x00\x00"  # uncompressed, 0 bytes: the empty request of ServerLive/ServerMetadata
# header block parts (RFC 7541): static :method POST, :scheme http; literals without indexing (table untouched)
STATIC = b"\x83\x86"
PLAIN = b"\x0f\x10\x10application/grpc" + b"\x00\x02te\x08trailers"  # content-type (static name 31), te


def _literal_indexed_path(path: bytes) -> bytes:
    """``:path`` as a literal with incremental indexing (static name 4): it becomes dynamic entry 62."""
    assert len(path) < 127
    return b"\x44" + bytes((len(path),)) + path


def _frame(ftype: int, flags: int, sid: int, payload: bytes = b"") -> bytes:
    n = len(payload)
    return struct.pack(">BHBBI", n >> 16, n & 0xFFFF, ftype, flags, sid) + payload


class Conn:
    def __init__(self, target: str):
        host, port = target.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=10)
        self.sock.sendall(PREFACE + _frame(SETTINGS, 0, 0))
        self.buf = b""
        self.sid = 1

    def close(self) -> None:
        self.sock.close()

    def frame(self) -> tuple[int, int, int, bytes]:
        while True:
            if len(self.buf) >= 9:
                n = int.from_bytes(self.buf[:3], "big")
                if len(self.buf) >= 9 + n:
                    ftype, flags, sid = self.buf[3], self.buf[4], int.from_bytes(self.buf[5:9], "big") & 0x7FFFFFFF
                    payload, self.buf = self.buf[9:9 + n], self.buf[9 + n:]
                    return ftype, flags, sid, payload
            chunk = self.sock.recv(65536)
            assert chunk, "the server closed the connection"
            self.buf += chunk

    def call(self, block: bytes, before: bytes = b"") -> tuple[bytes, list[bytes]]:
        """One unary call with this header block (``before``: frames sent in the same write); its message and
        the PING ACK payloads seen meanwhile."""
        sid, self.sid = self.sid, self.sid + 2
        self.sock.sendall(before + _frame(HEADERS, END_HEADERS, sid, block)
                          + _frame(DATA, END_STREAM, sid, EMPTY_MESSAGE))
        body, acks = b"", []
        while True:
            ftype, flags, fsid, payload = self.frame()
            if ftype == PING and flags & ACK:
                acks.append(payload)
            elif fsid == sid and ftype == DATA:
                body += payload
            elif fsid == sid and ftype == HEADERS and flags & END_STREAM:
                assert b"grpc-status\x010" in payload, payload
                return body[5:], acks

    def ping_ack(self, payload: bytes, deadline_s: float) -> float:
        """Send a PING, return how long its ACK took."""
        t0 = time.monotonic()
        self.sock.sendall(_frame(PING, 0, 0, payload))
        while time.monotonic() - t0 < deadline_s:
            ftype, flags, _, got = self.frame()
            if ftype == PING and flags & ACK and got == payload:
                return time.monotonic() - t0
        pytest.fail(f"no PING ACK within {deadline_s} s")


@pytest.fixture(scope="module")
def server(serve, onnx_model_dir):
    return serve(str(onnx_model_dir), name="iris", grpc=True)


def test_same_header_bytes_after_a_table_change_mean_the_new_headers(server):
    """The server answers a repeated header block without decoding it again only while the HPACK table is as it
    was: once a block adds an entry, the same bytes name another path and must be decoded as such."""
    c = Conn(server.grpc)
    try:
        indexed = STATIC + b"\xbe" + PLAIN  # :path = dynamic entry 62
        live = pb.ServerLiveResponse(live=True).SerializeToString()
        assert c.call(STATIC + _literal_indexed_path(SERVICE + b"ServerLive") + PLAIN)[0] == live
        assert c.call(indexed)[0] == live
        assert c.call(indexed)[0] == live  # answered from the decoded blocks
        # a new entry 62 (ServerLive moves to 63): the same bytes are a ServerMetadata call now
        meta = pb.ServerMetadataResponse.FromString(
            c.call(STATIC + _literal_indexed_path(SERVICE + b"ServerMetadata") + PLAIN)[0])
        assert meta.name
        assert pb.ServerMetadataResponse.FromString(c.call(indexed)[0]) == meta
        assert c.call(STATIC + b"\xbf" + PLAIN)[0] == live  # entry 63
    finally:
        c.close()


def test_ping_is_answered_idle_and_with_a_call(server):
    """A PING on an idle connection is answered on its own (within the short hold); one sent with a call is
    answered at the latest with that call's response."""
    c = Conn(server.grpc)
    try:
        c.call(STATIC + _literal_indexed_path(SERVICE + b"ServerLive") + PLAIN)
        assert c.ping_ack(b"idle0001", deadline_s=5) < 1
        _, acks = c.call(STATIC + b"\xbe" + PLAIN, before=_frame(PING, 0, 0, b"busy0001"))
        if not acks:  # the ACK went out just after the response (its hold timer)
            ftype, flags, _, payload = c.frame()
            acks = [payload] if ftype == PING and flags & ACK else []
        assert acks == [b"busy0001"]
    finally:
        c.close()


def test_a_model_infer_reset_before_its_batch_runs_is_dropped(server):
    """ModelInfer runs from callbacks (no task per call): a call reset in the same read that started it leaves the
    batch before it runs and gets no frame back, and the next call on the connection is answered."""
    req = pb.ModelInferRequest(model_name="iris")
    req.inputs.add(name="X", datatype="FP32", shape=[1, 4])
    req.raw_input_contents.append(struct.pack("<4f", 5.1, 3.5, 1.4, 0.2))
    msg = req.SerializeToString()
    body = b"\x00" + len(msg).to_bytes(4, "big") + msg
    path = SERVICE + b"ModelInfer"
    block = STATIC + b"\x04" + bytes((len(path),)) + path + PLAIN  # :path literal without indexing
    def batched() -> float:
        return metric(get(server.base + "/metrics").body.decode(), "mlstack_serve_batch_requests_sum")

    before = batched()
    c = Conn(server.grpc)
    try:
        c.sock.sendall(_frame(HEADERS, END_HEADERS, 1, block) + _frame(DATA, END_STREAM, 1, body)
                       + _frame(RST_STREAM, 0, 1, struct.pack(">I", 8))  # CANCEL
                       + _frame(HEADERS, END_HEADERS, 3, block) + _frame(DATA, END_STREAM, 3, body))
        seen, message = set(), b""
        while True:
            ftype, flags, sid, payload = c.frame()
            seen.add(sid)
            if sid == 3 and ftype == DATA:
                message += payload
            if sid == 3 and ftype == HEADERS and flags & END_STREAM:
                assert b"grpc-status\x010" in payload, payload
                break
        assert 1 not in seen
        resp = pb.ModelInferResponse.FromString(message[5:])
        assert [o.name for o in resp.outputs] == ["label", "probabilities"]
        assert batched() - before == 1  # the reset call never reached the model
    finally:
        c.close()
