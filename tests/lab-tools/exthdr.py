#!/usr/bin/env python3
"""Forward a server's IPv6 TCP packets to the client with a chain of extension headers
inserted: the path of an interceptor that hides its packets from a parser that walks only so
many headers.

Run inside the middlebox namespace. The harness drops the server's packets in the FORWARD
chain (ip6tables -A FORWARD -p tcp -s SERVER --sport PORT -d CLIENT -j DROP); this tool sniffs
them on --iface (the middlebox's interface towards the server: a packet socket sees them
before netfilter drops them) and sends each one on to the client itself, through a raw IPv6
socket (IPV6_HDRINCL: the kernel routes it and resolves the client's address), with --headers
Destination Options headers (8 bytes each, one PadN option) between the IPv6 header and TCP,
and the hop limit one lower. Segments longer than --mss bytes of payload (GRO may have merged
the server's) are cut into several, sequence numbers and checksums adjusted, so that the
packets fit the client's link. Linux takes any number of Destination Options headers.

With --front the client talks to another address than the server's (the harness DNATs it):
the tool sniffs the server's packets from --server and sends them from --front.

Prints "ready" on stdout once sniffing; one line per 100 packets on stderr. Exits on SIGTERM
or SIGINT. Needs CAP_NET_RAW (root).
"""

import argparse
import socket

from scapy.all import TCP, IPv6, IPv6ExtHdrDestOpt, PadN, Raw

import sniffing
from labtool import log


class Relay:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        # IPPROTO_RAW on an IPv6 socket means the header is included.
        self.sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_RAW)
        self.count = 0

    def handle(self, pkt) -> None:
        if IPv6 not in pkt or TCP not in pkt:
            return
        ip, tcp, a = pkt[IPv6], pkt[TCP], self.args
        if ip.src != a.server or ip.dst != a.client or tcp.sport != a.port:
            return
        payload = bytes(tcp.payload)
        # A packet socket may see link padding: trust the IPv6 payload length.
        tcp_header_len = tcp.dataofs * 4
        payload = payload[: ip.plen - tcp_header_len] if ip.plen else payload
        pieces = [payload[i : i + a.mss] for i in range(0, len(payload), a.mss)] or [b""]
        offset = 0
        for n, piece in enumerate(pieces):
            last = n == len(pieces) - 1
            flags = int(tcp.flags)
            if not last:
                flags &= ~0x09  # FIN and PSH only on the last piece
            seg = TCP(
                sport=tcp.sport,
                dport=tcp.dport,
                seq=(tcp.seq + offset) % (1 << 32),
                ack=tcp.ack,
                flags=flags,
                window=tcp.window,
                urgptr=tcp.urgptr,
                options=tcp.options,
            )
            if piece:
                seg = seg / Raw(piece)
            offset += len(piece)
            hlim = max(ip.hlim - 1, 1)
            out = IPv6(src=a.front or ip.src, dst=ip.dst, tc=ip.tc, fl=ip.fl, hlim=hlim)
            for _ in range(a.headers):
                out = out / IPv6ExtHdrDestOpt(options=[PadN(optdata=b"\x00" * 4)])
            out = out / seg
            self.sock.sendto(bytes(out), (a.client, 0))
            self.count += 1
            if self.count % 100 == 0:
                log(f"{self.count} packets forwarded with {a.headers} extension headers")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--iface", required=True, help="the middlebox's interface towards the server")
    ap.add_argument("--client", required=True, help="the client's IPv6 address")
    ap.add_argument("--server", required=True, help="the server's IPv6 address")
    ap.add_argument("--port", required=True, type=int, help="the server's TCP port")
    ap.add_argument("--front", help="the address the client connects to (default: --server)")
    ap.add_argument("--headers", type=int, default=9, help="Destination Options headers")
    ap.add_argument("--mss", type=int, default=1200, help="payload bytes per packet at most")
    args = ap.parse_args()

    relay = Relay(args)
    try:
        server = f"src host {args.server} and src port {args.port}"
        sniffing.serve(args.iface, f"ip6 and tcp and {server}", relay.handle)
    finally:
        relay.sock.close()


if __name__ == "__main__":
    main()
