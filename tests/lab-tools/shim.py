#!/usr/bin/env python3
"""TCP proxies that reshape a connection's bytes without breaking it: attacks on a sensor's
record reassembly and on how far into a stream it looks for the TLS handshake.

  split-records --listen HOST:PORT --upstream HOST:PORT
      A plain TCP relay. From server to client it re-frames every TLS handshake record (content
      type 22) as a run of records of one byte of payload each (same type and version), until
      the server's first ChangeCipherSpec record (type 20); from then on, and for every other
      record type, bytes pass unchanged. Client to server passes unchanged. TLS allows
      handshake messages to be fragmented over any number of records, so a TLS 1.2 client
      completes the handshake; a sensor that expects one message per record (or a few records
      per flight) does not see the certificates. If the server's bytes stop looking like TLS
      records, the rest passes unchanged.

  tiny-segments --listen HOST:PORT --upstream HOST:PORT
      A plain TCP relay that sends the server's bytes to the client one byte per TCP segment:
      TCP_NODELAY, and each byte only once the previous one was acknowledged (SIOCOUTQ is 0),
      so TCP never merges queued bytes (turn net.ipv4.tcp_autocorking off in the relay's
      network namespace too). Client to server passes unchanged. What a sensor that copies every segment to userspace pays most for.

  pad-connect --listen HOST:PORT --pad BYTES [--upstream-proxy HOST:PORT]
      An explicit HTTP proxy for CONNECT only whose "200" answer carries BYTES of padding
      header lines ("X-Pad-NNNN: xxx...", 100 bytes per line), so the TLS handshake starts
      far behind the start of the server-to-client stream. Without --upstream-proxy it
      connects to the CONNECT target itself (names resolved with the system resolver) and
      answers "HTTP/1.1 200 Connection established"; with it, it forwards the client's request
      head unchanged to that proxy and inserts the padding into the upstream's reply head.
      Clients read the whole reply head before starting TLS, so they do not notice.

Prints "ready" on stdout once listening; one line per connection on stderr. Exits on SIGTERM or
SIGINT.
"""

import argparse
import asyncio
import fcntl
import signal
import socket
import struct
import termios

from labtool import host_port, log

HEAD_LIMIT = 64 * 1024
HANDSHAKE, CHANGE_CIPHER_SPEC = 22, 20
TLS_TYPES = {20, 21, 22, 23, 24}



def padding(total: int) -> bytes:
    """Header lines "X-Pad-NNNN: xxx...\\r\\n" of 100 bytes each, the last one 15 to 114 bytes:
    exactly `total` bytes in all (a total below 15, one minimal line, gives nothing)."""
    lines, left, n = [], total, 0
    while left >= 15:  # "X-Pad-0000: x\r\n"
        name = f"X-Pad-{n:04d}: "
        size = 100 if left >= 115 else left
        lines.append(name + "x" * (size - len(name) - 2) + "\r\n")
        left -= size
        n += 1
    return "".join(lines).encode()


class RecordSplitter:
    """Server-to-client filter: handshake records re-framed as one-byte records until the
    first ChangeCipherSpec; records split across reads are buffered."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.passthrough = False
        self.split = 0

    def feed(self, data: bytes) -> bytes:
        if self.passthrough:
            return data
        self.buf += data
        out = bytearray()
        while len(self.buf) >= 5:
            ctype, version = self.buf[0], bytes(self.buf[1:3])
            if ctype not in TLS_TYPES or version[0] != 3:
                self.passthrough = True  # not TLS records (any more)
                break
            end = 5 + int.from_bytes(self.buf[3:5], "big")
            if len(self.buf) < end:
                break
            body = bytes(self.buf[5:end])
            if ctype == HANDSHAKE and body:
                hdr = bytes([HANDSHAKE]) + version + b"\x00\x01"
                out += b"".join(hdr + body[i : i + 1] for i in range(len(body)))
                self.split += 1
            else:
                out += self.buf[:end]
            del self.buf[:end]
            if ctype == CHANGE_CIPHER_SPEC:
                self.passthrough = True
                break
        if self.passthrough:
            out += self.buf
            self.buf.clear()
        return bytes(out)

    def flush(self) -> bytes:
        rest = bytes(self.buf)
        self.buf.clear()
        return rest


async def pump(reader, writer, transform=None, flush=None) -> None:
    try:
        while data := await reader.read(65536):
            if transform:
                data = transform(data)
            if data:
                writer.write(data)
                await writer.drain()
        if flush and (rest := flush()):
            writer.write(rest)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except OSError:  # reset or broken pipe: the other direction sees the close
        writer.close()


async def splice(c_reader, c_writer, u_reader, u_writer, splitter=None) -> None:
    try:
        await asyncio.gather(
            pump(c_reader, u_writer),
            pump(u_reader, c_writer,
                 splitter.feed if splitter else None, splitter.flush if splitter else None),
        )
    finally:
        for w in (c_writer, u_writer):
            w.close()


async def split_records(args, c_reader, c_writer) -> None:
    peer = c_writer.get_extra_info("peername")
    try:
        u_reader, u_writer = await asyncio.open_connection(*args.upstream)
    except OSError as e:
        log(f"{peer}: upstream {args.upstream}: {e}")
        c_writer.close()
        return
    splitter = RecordSplitter()
    await splice(c_reader, c_writer, u_reader, u_writer, splitter)
    log(f"{peer}: done, {splitter.split} handshake record(s) split into one-byte records")


async def unacked(fd: int) -> None:
    """Wait (up to a second) until the socket's send queue is empty: every byte sent was
    acknowledged, so the next send is a segment of its own (TCP would otherwise merge queued
    bytes into one segment when the window opens)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 1.0
    while loop.time() < deadline:
        left = struct.unpack("i", fcntl.ioctl(fd, termios.TIOCOUTQ, b"\0\0\0\0"))[0]
        if left == 0:
            return
        await asyncio.sleep(0.0002)


async def pump_bytewise(reader, writer) -> int:
    """Copy reader to writer one byte per TCP segment: each byte is sent once the previous
    one was acknowledged; the bytes sent."""
    sent = 0
    fd = writer.get_extra_info("socket").fileno()
    try:
        while data := await reader.read(65536):
            for i in range(len(data)):
                writer.write(data[i : i + 1])
                await writer.drain()
                await unacked(fd)
            sent += len(data)
        if writer.can_write_eof():
            writer.write_eof()
    except OSError:
        writer.close()
    return sent


async def tiny_segments(args, c_reader, c_writer) -> None:
    peer = c_writer.get_extra_info("peername")
    try:
        u_reader, u_writer = await asyncio.open_connection(*args.upstream)
    except OSError as e:
        log(f"{peer}: upstream {args.upstream}: {e}")
        c_writer.close()
        return
    c_writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        _, sent = await asyncio.gather(pump(c_reader, u_writer), pump_bytewise(u_reader, c_writer))
    finally:
        for w in (c_writer, u_writer):
            w.close()
    log(f"{peer}: done, {sent} bytes to the client one per segment")


async def read_head(reader) -> bytes:
    """The bytes up to and including the blank line; anything after stays in the reader."""
    return await reader.readuntil(b"\r\n\r\n")


async def pad_connect(args, c_reader, c_writer) -> None:
    peer = c_writer.get_extra_info("peername")
    try:
        head = await read_head(c_reader)
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError) as e:
        log(f"{peer}: no request head: {e!r}")
        c_writer.close()
        return
    request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
    parts = request_line.split()
    if len(parts) != 3 or parts[0].upper() != "CONNECT":
        c_writer.write(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
        c_writer.close()
        log(f"{peer}: refused {request_line!r}")
        return
    pad = padding(args.pad)
    try:
        if args.upstream_proxy:
            u_reader, u_writer = await asyncio.open_connection(*args.upstream_proxy)
            u_writer.write(head)
            await u_writer.drain()
            reply = await read_head(u_reader)
            c_writer.write(reply[:-2] + pad + b"\r\n")
        else:
            host, port = host_port(parts[1])
            u_reader, u_writer = await asyncio.open_connection(host, port)
            c_writer.write(b"HTTP/1.1 200 Connection established\r\n" + pad + b"\r\n")
        await c_writer.drain()
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
            argparse.ArgumentTypeError) as e:
        log(f"{peer}: {request_line!r}: {e!r}")
        c_writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
        c_writer.close()
        return
    log(f"{peer}: {request_line!r}: reply padded with {len(pad)} bytes")
    await splice(c_reader, c_writer, u_reader, u_writer)


async def serve(args) -> None:
    handler = {
        "split-records": split_records,
        "tiny-segments": tiny_segments,
        "pad-connect": pad_connect,
    }[args.shim]
    tasks: set[asyncio.Task] = set()

    async def on_client(reader, writer) -> None:
        task = asyncio.current_task()
        tasks.add(task)
        try:
            await handler(args, reader, writer)
        except asyncio.CancelledError:
            writer.close()
        except Exception as e:
            log(f"error: {e!r}")
            writer.close()
        finally:
            tasks.discard(task)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = await asyncio.start_server(on_client, *args.listen, limit=HEAD_LIMIT)
    print("ready", flush=True)
    await stop.wait()
    server.close()
    for task in list(tasks):
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="shim", required=True)
    p = sub.add_parser("split-records", help="handshake records re-framed one byte each")
    p.add_argument("--listen", required=True, type=host_port, metavar="HOST:PORT")
    p.add_argument("--upstream", required=True, type=host_port, metavar="HOST:PORT")
    p = sub.add_parser("tiny-segments", help="the server's bytes one per TCP segment")
    p.add_argument("--listen", required=True, type=host_port, metavar="HOST:PORT")
    p.add_argument("--upstream", required=True, type=host_port, metavar="HOST:PORT")
    p = sub.add_parser("pad-connect", help="CONNECT proxy with a padded reply head")
    p.add_argument("--listen", required=True, type=host_port, metavar="HOST:PORT")
    p.add_argument("--pad", required=True, type=int, metavar="BYTES")
    p.add_argument("--upstream-proxy", type=host_port, metavar="HOST:PORT")
    asyncio.run(serve(ap.parse_args()))


if __name__ == "__main__":
    main()
