#!/usr/bin/env python3
"""TLS servers built on Python's ssl module (a real TLS stack on the attacking side), each
shaped to get the TLS handshake past a sensor unseen or unparsed.

  smtp --listen HOST:PORT --cert CHAIN.pem --key KEY.pem --ehlo-pad BYTES
      SMTP with STARTTLS whose EHLO answer carries BYTES of padding lines
      ("250-X-PAD-NNNN xxx...", 100 bytes per line) before "250 STARTTLS", so the handshake
      starts far into the stream. After "220 2.0.0 Ready" the socket becomes a TLS server
      (TLS 1.2 or 1.3); after the handshake it reads one line, answers "221 bye" and closes.

  https --listen HOST:PORT --cert CHAIN.pem --key KEY.pem [--dstopts BYTES]
      Answers every TLS connection with "HTTP/1.0 200 OK" and "ok" once it has read the
      request head. --dstopts (IPv6 only) sets the sticky option IPV6_DSTOPTS on the listening
      socket and on every accepted one: a Destination Options header of BYTES (a multiple of
      8, from 8 to 2048), so every packet the server sends (from the SYN-ACK on) carries an
      extension header (IPv6 next header 60) between the IPv6 and TCP headers. 8 bytes hold
      one PadN option; longer headers are filled with options of the unassigned type 0x1e,
      whose top bits tell a receiver to skip them (Linux allows 7 bytes of padding at most,
      and 8 options that are not padding). Linux clients ignore the header; a parser that
      expects TCP right after the IPv6 header, or caps the header's length, does not find
      it. Needs CAP_NET_RAW.

  selective --listen HOST:PORT --upstream HOST:PORT --cert FORGED_CHAIN.pem --key FORGED_KEY.pem
      A transparent interceptor that leaves some clients alone. It reads the client's first
      TLS record (at most 16 KiB) and parses the ClientHello's extensions. Without a
      session_ticket extension (type 35) the client is passed through: the bytes read so far
      go to --upstream and the connection is spliced both ways. Otherwise it terminates TLS
      itself with the forged chain (the handshake fed through ssl.MemoryBIO, as the
      ClientHello is already consumed from the socket) and answers an HTTP request with
      "HTTP/1.0 200 OK" and "ok". Bytes that do not parse as a ClientHello (or no bytes for
      10 s) are passed through. Left alone: curl (it sets SSL_OP_NO_TICKET), Python with
      ssl.OP_NO_TICKET, openssl s_client -no_ticket. Intercepted: openssl s_client, Python's
      default context (urllib), gnutls-cli.

HOST may be a name, an IPv4 address or an IPv6 address (bare or in brackets).

Every connection is served in a thread of its own. Prints "ready" on stdout once listening;
one line per connection on stderr. Exits on SIGTERM or SIGINT.
"""

import argparse
import select
import signal
import socket
import ssl
import sys
import threading

from labtool import host_port, log

RECORD_CAP = 16 * 1024
HEAD_LIMIT = 64 * 1024
SESSION_TICKET = 35
OK = b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"
IPV6_DSTOPTS = getattr(socket, "IPV6_DSTOPTS", 59)
# An unassigned option type whose top two bits (00) say "skip it if unknown".
SKIPPABLE_OPTION = 0x1E


def dstopts(size: int) -> bytes:
    """A Destination Options header of `size` bytes: next header (the kernel fills it), the
    length in 8-octet units beyond the first, then options filling it exactly."""
    if size % 8 or not 8 <= size <= 2048:
        sys.exit("--dstopts: a multiple of 8 from 8 to 2048")
    if size == 8:
        return bytes([0, 0, 1, 4, 0, 0, 0, 0])  # one PadN option of 4 zero bytes
    body = bytearray()
    left = size - 2
    while left:
        # Options of at most 257 bytes (type, length, up to 255 data bytes); never leave
        # fewer than 2 bytes for the last one.
        n = min(left, 257)
        if 0 < left - n < 2:
            n -= 2
        body += bytes([SKIPPABLE_OPTION, n - 2]) + b"\xa5" * (n - 2)
        left -= n
    return bytes([0, size // 8 - 1]) + bytes(body)


class Stop(Exception):
    pass



def server_context(cert: str, key: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    return ctx


def recv_line(sock, limit: int = 4096) -> bytes:
    """One line, read a byte at a time so nothing behind it is consumed."""
    line = b""
    while not line.endswith(b"\n") and len(line) < limit:
        c = sock.recv(1)
        if not c:
            break
        line += c
    return line


def first_line(head: bytes) -> str:
    return repr(head.split(b"\r\n", 1)[0][:60])


def close_tls(tls: ssl.SSLSocket) -> None:
    """Send close_notify (waiting a little for the peer's), then close."""
    try:
        tls.settimeout(2)
        tls.unwrap()
    except (OSError, ValueError):
        pass  # the peer closed without close_notify, or never answered it
    tls.close()


def recv_head(recv) -> bytes:
    head = b""
    while b"\r\n\r\n" not in head and len(head) < HEAD_LIMIT:
        data = recv(4096)
        if not data:
            break
        head += data
    return head


# ---- smtp ---------------------------------------------------------------------------------


def ehlo_reply(total: int) -> bytes:
    """250-smtp.lab.test, padding lines of 100 bytes (the last 18 to 117) totalling `total`
    bytes (nothing below one minimal line), then 250 STARTTLS."""
    lines, left, n = [], total, 0
    while left >= 18:  # "250-X-PAD-0000 x\r\n"
        name = f"250-X-PAD-{n:04d} "
        size = 100 if left >= 118 else left
        lines.append(name + "x" * (size - len(name) - 2) + "\r\n")
        left -= size
        n += 1
    return b"250-smtp.lab.test\r\n" + "".join(lines).encode() + b"250 STARTTLS\r\n"


def serve_smtp(conn: socket.socket, args, ctx: ssl.SSLContext) -> str:
    conn.sendall(b"220 smtp.lab.test ESMTP\r\n")
    while True:
        line = recv_line(conn)
        if not line:
            return "closed before STARTTLS"
        cmd = line.strip().upper()
        if cmd.startswith((b"EHLO", b"HELO")):
            conn.sendall(ehlo_reply(args.ehlo_pad))
        elif cmd == b"STARTTLS":
            conn.sendall(b"220 2.0.0 Ready\r\n")
            break
        elif cmd == b"QUIT":
            conn.sendall(b"221 bye\r\n")
            return "QUIT before STARTTLS"
        else:
            conn.sendall(b"502 5.5.2 Command not recognized\r\n")
    tls = ctx.wrap_socket(conn, server_side=True)
    version = tls.version()
    line = recv_line(tls)
    try:
        tls.sendall(b"221 bye\r\n")
    except OSError:
        pass  # the client may have closed right after its line, or without one
    close_tls(tls)
    return f"{version} handshake, then {line.strip()[:40]!r}"


# ---- https --------------------------------------------------------------------------------


def serve_https(conn: socket.socket, args, ctx: ssl.SSLContext) -> str:
    if args.dstopts:
        conn.setsockopt(socket.IPPROTO_IPV6, IPV6_DSTOPTS, dstopts(args.dstopts))
    tls = ctx.wrap_socket(conn, server_side=True)
    head = recv_head(tls.recv)
    tls.sendall(OK)
    version = tls.version()
    close_tls(tls)
    return f"{version}: {first_line(head)}"


# ---- selective ----------------------------------------------------------------------------


def read_first_record(conn: socket.socket) -> bytes:
    """The first TLS record; or whatever was read when the bytes are not a handshake record,
    the record exceeds the cap, the peer half-closes, or it sends nothing for 10 s."""
    buf = b""
    conn.settimeout(10)
    try:
        while not buf or buf[0] == 22:
            if len(buf) < 5:
                need = 5 - len(buf)
            else:
                need = 5 + int.from_bytes(buf[3:5], "big") - len(buf)
            if need <= 0 or len(buf) >= RECORD_CAP:
                break
            data = conn.recv(min(need, RECORD_CAP - len(buf)))
            if not data:
                break
            buf += data
    except TimeoutError:
        pass
    conn.settimeout(None)
    return buf


def hello_extensions(record: bytes) -> list[int] | None:
    """Extension types of the ClientHello in a handshake record (as far as the record holds
    it), or None if it is not one."""
    try:
        if record[0] != 22 or record[1] != 3 or record[5] != 1:
            return None
        hello = record[9 : 9 + int.from_bytes(record[6:9], "big")]
        p = 2 + 32  # client_version, random
        p += 1 + hello[p]  # session id
        p += 2 + int.from_bytes(hello[p : p + 2], "big")  # cipher suites
        p += 1 + hello[p]  # compression methods
        if p >= len(hello):
            return []  # no extensions at all
        end = min(p + 2 + int.from_bytes(hello[p : p + 2], "big"), len(hello))
        p += 2
        types = []
        while p + 4 <= end:
            types.append(int.from_bytes(hello[p : p + 2], "big"))
            p += 4 + int.from_bytes(hello[p + 2 : p + 4], "big")
        return types
    except IndexError:
        return None


def splice(a: socket.socket, b: socket.socket) -> None:
    peer = {a: b, b: a}
    reading = {a, b}
    try:
        while reading:
            for s in select.select(list(reading), [], [])[0]:
                data = s.recv(65536)
                if data:
                    peer[s].sendall(data)
                else:
                    reading.discard(s)
                    peer[s].shutdown(socket.SHUT_WR)
    except OSError:
        pass
    finally:
        a.close()
        b.close()


class BioTLS:
    """A server-side TLS connection over a socket through MemoryBIOs, starting from bytes
    already read from that socket."""

    def __init__(self, sock: socket.socket, ctx: ssl.SSLContext, already_read: bytes):
        self.sock = sock
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.incoming, self.outgoing, server_side=True)
        self.incoming.write(already_read)

    def _run(self, op, *args):
        while True:
            try:
                result = op(*args)
                self._flush()
                return result
            except ssl.SSLWantReadError:
                self._flush()
                data = self.sock.recv(65536)
                if data:
                    self.incoming.write(data)
                else:
                    self.incoming.write_eof()

    def _flush(self) -> None:
        if data := self.outgoing.read():
            self.sock.sendall(data)

    def handshake(self) -> None:
        self._run(self.obj.do_handshake)

    def recv(self, n: int) -> bytes:
        try:
            return self._run(self.obj.read, n)
        except (ssl.SSLEOFError, ssl.SSLZeroReturnError):
            return b""

    def sendall(self, data: bytes) -> None:
        self._run(self.obj.write, data)

    def close(self) -> None:
        try:
            self.obj.unwrap()  # queues our close_notify; the peer's need not be awaited
        except ssl.SSLError:
            pass
        try:
            self._flush()
        except OSError:
            pass
        self.sock.close()


def serve_selective(conn: socket.socket, args, ctx: ssl.SSLContext) -> str:
    first = read_first_record(conn)
    exts = hello_extensions(first)
    if exts is None or SESSION_TICKET not in exts:
        why = "no ClientHello" if exts is None else "no session_ticket extension"
        upstream = socket.create_connection(args.upstream, timeout=10)
        upstream.settimeout(None)
        upstream.sendall(first)
        splice(conn, upstream)
        return f"passed through to {args.upstream[0]}:{args.upstream[1]} ({why})"
    tls = BioTLS(conn, ctx, first)
    tls.handshake()
    head = recv_head(tls.recv)
    tls.sendall(OK)
    version = tls.obj.version()
    tls.close()
    return f"intercepted with the forged chain, {version}: {first_line(head)}"


# ---- main ---------------------------------------------------------------------------------


def listen(addr: tuple[str, int], options: int | None) -> socket.socket:
    family, stype, proto, _, sockaddr = socket.getaddrinfo(
        addr[0], addr[1], type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    if options and family != socket.AF_INET6:
        sys.exit("--dstopts needs an IPv6 listening address")
    s = socket.socket(family, stype, proto)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if options:
        s.setsockopt(socket.IPPROTO_IPV6, IPV6_DSTOPTS, dstopts(options))
    s.bind(sockaddr)
    s.listen(128)
    return s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="server", required=True)
    for name, helptext in [
        ("smtp", "SMTP STARTTLS with a padded EHLO answer"),
        ("https", "HTTPS, optionally with an IPv6 Destination Options header"),
        ("selective", "intercept clients that offer session tickets, pass the others"),
    ]:
        p = sub.add_parser(name, help=helptext)
        p.add_argument("--listen", required=True, type=host_port, metavar="HOST:PORT")
        p.add_argument("--cert", required=True, help="PEM chain, leaf first")
        p.add_argument("--key", required=True, help="PEM private key")
        if name == "smtp":
            p.add_argument("--ehlo-pad", required=True, type=int, metavar="BYTES")
        if name == "https":
            p.add_argument("--dstopts", type=int, metavar="BYTES")
        if name == "selective":
            p.add_argument("--upstream", required=True, type=host_port, metavar="HOST:PORT")
    args = ap.parse_args()
    handler = {"smtp": serve_smtp, "https": serve_https, "selective": serve_selective}[args.server]
    ctx = server_context(args.cert, args.key)
    sock = listen(args.listen, getattr(args, "dstopts", None))

    def handle(conn: socket.socket, peer) -> None:
        try:
            log(f"{peer[0]}:{peer[1]}: {handler(conn, args, ctx)}")
        except Exception as e:
            log(f"{peer[0]}:{peer[1]}: {e!r}")
        finally:
            conn.close()

    def stop(*_):
        raise Stop

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print("ready", flush=True)
    try:
        while True:
            conn, peer = sock.accept()
            threading.Thread(target=handle, args=(conn, peer), daemon=True).start()
    except Stop:
        pass
    finally:
        sock.close()


if __name__ == "__main__":
    main()
