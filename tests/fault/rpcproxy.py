"""An RPC-aware proxy for tests that must see, count or tamper with the
COMPOUNDs between efsfuse and the server.

It reads ONC RPC records (record marking, the COMPOUND tag after the call
header); efsfuse tags every COMPOUND with the operation it performs
("lookup", "open", "remove", ...), which is what the proxy goes by.
"""
import collections
import socket
import struct
import threading

TIMEOUT = 10
OP_PUTFH = 22


def rpc_records(buf):
    """Splits complete RPC records (with their markers) off buf: (records, rest)."""
    out = []
    while True:
        off, complete = 0, False
        while len(buf) - off >= 4:
            marker = struct.unpack_from(">I", buf, off)[0]
            n = marker & 0x7FFFFFFF
            if len(buf) - off - 4 < n:
                break
            off += 4 + n
            if marker & 0x80000000:
                complete = True
                break
        if not complete:
            return out, buf
        out.append(bytes(buf[:off]))
        buf = buf[off:]


def rpc_payload(record):
    """The record's data without its fragment markers."""
    out, off = b"", 0
    while off < len(record):
        n = struct.unpack_from(">I", record, off)[0] & 0x7FFFFFFF
        out += record[off + 4:off + 4 + n]
        off += 4 + n
    return out


def xdr_opaque(data, off):
    """The XDR opaque at off: (its bytes, the offset after it)."""
    n = struct.unpack_from(">I", data, off)[0]
    return data[off + 4:off + 4 + n], off + 4 + ((n + 3) & ~3)


def _call_args(data):
    """Offset of an RPC call's arguments (after the credential and verifier)."""
    off = 24
    for _ in range(2):  # credential, verifier: a flavor, then an opaque body
        _, off = xdr_opaque(data, off + 4)
    return off


def call_tag(data):
    """(xid, COMPOUND tag or None) of an RPC call."""
    xid, mtype = struct.unpack_from(">II", data, 0)
    if mtype != 0 or len(data) < 24:
        return xid, None
    proc = struct.unpack_from(">I", data, 20)[0]
    if proc != 1:
        return xid, None
    tag, _ = xdr_opaque(data, _call_args(data))
    return xid, tag.decode(errors="replace")


def op_after_putfh(call):
    """(opcode, offset of its arguments) of the operation a COMPOUND call
    starting with PUTFH performs; (None, None) for any other call."""
    _, off = xdr_opaque(call, _call_args(call))  # tag
    off += 4  # minorversion
    numops, first = struct.unpack_from(">II", call, off)
    if numops < 2 or first != OP_PUTFH:
        return None, None
    _, off = xdr_opaque(call, off + 8)  # the filehandle
    return struct.unpack_from(">I", call, off)[0], off + 4


def reply_status(data):
    """The COMPOUND status of an accepted RPC reply, else None."""
    if len(data) < 24 or struct.unpack_from(">II", data, 4) != (1, 0):
        return None
    off = 16
    n = struct.unpack_from(">I", data, off)[0]
    off += 4 + ((n + 3) & ~3)
    if len(data) < off + 8 or struct.unpack_from(">I", data, off)[0] != 0:
        return None
    return struct.unpack_from(">I", data, off + 4)[0]


def compound_reply(xid, tag, status, ops):
    """A record with an accepted RPC reply carrying COMPOUND4res(status, tag,
    ops): ops is a list of (op, status) results with no further body (only a
    failed op, or one whose result is its status alone, may be given)."""
    tagb = tag.encode()
    body = struct.pack(">IIIIII", xid, 1, 0, 0, 0, 0)
    body += struct.pack(">II", status, len(tagb)) + tagb + b"\0" * (-len(tagb) % 4)
    body += struct.pack(">I", len(ops)) + b"".join(struct.pack(">II", o, st) for o, st in ops)
    return struct.pack(">I", 0x80000000 | len(body)) + body


class ReplyDropper:
    """127.0.0.1:port -> upstream; arm(tag) makes it swallow the next reply to a
    COMPOUND tagged tag and reset the connection (both sides)."""

    def __init__(self, upstream_port):
        self.upstream = ("127.0.0.1", upstream_port)
        self.lock = threading.Lock()
        self.send_lock = threading.Lock()  # replies to efsfuse come from two threads
        self.tags = {}  # xid -> tag
        self.calls = collections.Counter()  # COMPOUNDs sent by efsfuse, by tag
        self.replies = collections.Counter()  # the server's answers, by (tag, status)
        self.events = []  # ("call" | "reply", tag) in the order they passed
        self.armed = None
        self.fired = threading.Event()
        self.up_lock = threading.Lock()  # delayed calls go up from timer threads
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self.conns = []
        threading.Thread(target=self._accept, daemon=True).start()

    def arm(self, tag):
        with self.lock:
            self.armed = tag
            self.fired.clear()

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream, timeout=TIMEOUT)
                server.settimeout(None)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.conns += [client, server]
            pair = (client, server)
            threading.Thread(target=self._up, args=pair, daemon=True).start()
            threading.Thread(target=self._down, args=pair, daemon=True).start()

    @staticmethod
    def _reset(pair):
        for s in pair:
            try:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                # Wakes the other thread's recv(): the socket is released,
                # and the RST sent, only when nobody uses it any more.
                s.shutdown(socket.SHUT_RD)
            except OSError:
                pass
            s.close()

    def answer_locally(self, call, xid, tag):
        """A reply (record bytes) the proxy gives itself instead of forwarding
        the call, or None to forward it. Subclasses play a server this way."""
        return None

    def call_delay(self, tag):
        """Seconds to hold a call back before forwarding it (others pass it)."""
        return 0

    def _forward_up(self, server, record):
        try:
            with self.up_lock:
                server.sendall(record)
        except OSError:
            pass

    def _pump(self, src, dst, on_record):
        """Forwards src's RPC records through on_record(record) until either
        side closes or on_record returns False; then resets both."""
        buf = b""
        try:
            while True:
                data = src.recv(1 << 16)
                if not data:
                    break
                buf += data
                recs, buf = rpc_records(buf)
                for r in recs:
                    if not on_record(r):
                        return
        except OSError:
            pass
        self._reset((src, dst))

    def _up(self, client, server):
        def on_call(r):
            call = rpc_payload(r)
            xid, tag = call_tag(call)
            if tag is not None:
                with self.lock:
                    self.calls[tag] += 1
                    self.events.append(("call", tag))
            reply = self.answer_locally(call, xid, tag) if tag is not None else None
            if reply is not None:
                with self.send_lock:
                    client.sendall(reply)
                return True
            if tag is not None:
                with self.lock:
                    self.tags[xid] = tag
            delay = self.call_delay(tag) if tag is not None else 0
            if delay > 0:
                threading.Timer(delay, self._forward_up, (server, r)).start()
            else:
                with self.up_lock:
                    server.sendall(r)
            return True

        self._pump(client, server, on_call)

    def _down(self, client, server):
        def on_reply(r):
            data = rpc_payload(r)
            xid = struct.unpack_from(">I", data, 0)[0]
            with self.lock:
                tag = self.tags.pop(xid, None)
                if tag is not None:
                    self.replies[(tag, reply_status(data))] += 1
                    self.events.append(("reply", tag))
                drop = tag is not None and tag == self.armed
                if drop:
                    self.armed = None
            if drop:
                self._reset((client, server))
                self.fired.set()
                return False
            with self.send_lock:
                client.sendall(r)
            return True

        self._pump(server, client, on_reply)

    def close(self):
        self.listener.close()
        with self.lock:
            conns = list(self.conns)
        self._reset(conns)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
