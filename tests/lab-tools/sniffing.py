"""The sniffing loop the packet tools share: sniff on an interface until SIGTERM or SIGINT,
hand every packet to a handler (an exception in it is logged, never fatal), print "ready"
on stdout once the capture runs."""

import signal
import sys
import threading
from typing import Callable

from scapy.all import AsyncSniffer, conf

from labtool import log


def serve(iface: str, bpf_filter: str, handle: Callable) -> None:
    """Sniff `iface` through `bpf_filter`, calling `handle(packet)`, until told to stop."""
    conf.verb = 0
    started = threading.Event()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    def safe_handle(pkt) -> None:
        try:
            handle(pkt)
        except Exception as e:  # keep sniffing whatever one packet did
            log(f"error: {e!r}")

    sniffer = AsyncSniffer(
        iface=iface,
        filter=bpf_filter,
        prn=safe_handle,
        store=False,
        started_callback=started.set,
    )
    sniffer.start()
    while not started.wait(0.1):
        if not sniffer.thread.is_alive() or stop.is_set():
            sys.exit("sniffer failed to start")
    print("ready", flush=True)
    while not stop.wait(0.5):
        if not sniffer.thread.is_alive():
            sys.exit("sniffer stopped")
    sniffer.stop()
