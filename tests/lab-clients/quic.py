"""An HTTP/3 origin and client on aioquic (PyPI), for the fixtures and the lab's QUIC rows.

    quic.py server --listen 127.0.0.1:4433 --cert leaf.pem --key leaf.key [--retry]
    quic.py client --connect 127.0.0.1:4433 --sni name.test [--ca root.pem] [--version 2]
                   [--fallback-tcp]

The server answers every HTTP/3 request with 200 and a short body. The client sends one GET
and exits 0 when the answer came, 1 when the handshake or the request failed (a certificate
it does not trust, no answer within --timeout seconds). With --fallback-tcp it does what a
browser does when QUIC gets no answer: the same GET over TCP (HTTPS), to the same name and
port, after --timeout seconds.
"""

import argparse
import asyncio
import ssl
import sys
import urllib.request

from aioquic.asyncio import connect, serve
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import ProtocolNegotiated, QuicEvent
from aioquic.quic.packet import QuicProtocolVersion


def host_port(s):
    host, _, port = s.rpartition(":")
    return host.strip("[]"), int(port)


class Origin(QuicConnectionProtocol):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._h3 = None

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, ProtocolNegotiated):
            self._h3 = H3Connection(self._quic)
        if self._h3 is None:
            return
        for ev in self._h3.handle_event(event):
            if isinstance(ev, HeadersReceived):
                body = b"hello over quic\n"
                self._h3.send_headers(
                    ev.stream_id,
                    [
                        (b":status", b"200"),
                        (b"content-type", b"text/plain"),
                        (b"content-length", str(len(body)).encode()),
                    ],
                )
                self._h3.send_data(ev.stream_id, body, end_stream=True)
                self.transmit()


class Client(QuicConnectionProtocol):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._h3 = H3Connection(self._quic)
        self.done = asyncio.get_running_loop().create_future()
        self.status = None

    def get(self, authority, path):
        sid = self._quic.get_next_available_stream_id()
        self._h3.send_headers(
            sid,
            [
                (b":method", b"GET"),
                (b":scheme", b"https"),
                (b":authority", authority.encode()),
                (b":path", path.encode()),
                (b"user-agent", b"aioquic-lab"),
            ],
            end_stream=True,
        )
        self.transmit()

    def quic_event_received(self, event: QuicEvent) -> None:
        for ev in self._h3.handle_event(event):
            if isinstance(ev, HeadersReceived):
                for k, v in ev.headers:
                    if k == b":status":
                        self.status = int(v)
            if isinstance(ev, DataReceived) and ev.stream_ended and not self.done.done():
                self.done.set_result(self.status)
            if isinstance(ev, HeadersReceived) and ev.stream_ended and not self.done.done():
                self.done.set_result(self.status)


async def run_server(args):
    config = QuicConfiguration(is_client=False, alpn_protocols=H3_ALPN)
    config.load_cert_chain(args.cert, args.key)
    host, port = host_port(args.listen)
    await serve(host, port, configuration=config, create_protocol=Origin, retry=args.retry)
    print("listening", flush=True)
    await asyncio.Future()


async def run_client(args):
    config = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, server_name=args.sni)
    if args.ca:
        config.load_verify_locations(args.ca)
    else:
        config.load_verify_locations(ssl.get_default_verify_paths().cafile or "/etc/ssl/certs/ca-certificates.crt")
    if args.version == 2:
        config.original_version = QuicProtocolVersion.VERSION_2
    host, port = host_port(args.connect)
    async with connect(host, port, configuration=config, create_protocol=Client) as client:
        client.get(args.sni, "/")
        status = await client.done
        print("status", status, flush=True)
        return 0 if status == 200 else 1


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("server")
    s.add_argument("--listen", required=True)
    s.add_argument("--cert", required=True)
    s.add_argument("--key", required=True)
    s.add_argument("--retry", action="store_true")
    c = sub.add_parser("client")
    c.add_argument("--connect", required=True)
    c.add_argument("--sni", required=True)
    c.add_argument("--ca")
    c.add_argument("--version", type=int, default=1, choices=[1, 2])
    c.add_argument("--timeout", type=float, default=10.0)
    c.add_argument("--fallback-tcp", action="store_true")
    args = p.parse_args()
    if args.mode == "server":
        asyncio.run(run_server(args))
        return 0
    try:
        return asyncio.run(asyncio.wait_for(run_client(args), args.timeout))
    except Exception as e:  # a refused certificate, a timeout: the row decides what it means
        print("failed:", type(e).__name__, e, file=sys.stderr, flush=True)
        if not args.fallback_tcp:
            return 1
    _, port = host_port(args.connect)
    ctx = ssl.create_default_context(cafile=args.ca)
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=ctx)
    )
    try:
        opener.open(f"https://{args.sni}:{port}/", timeout=15).read()
    except Exception as e:
        print("tcp failed:", type(e).__name__, e, file=sys.stderr, flush=True)
        return 1
    print("tcp ok", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
