"""Helpers every lab tool uses: logging to stderr, and HOST:PORT arguments."""

import argparse
import sys


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def host_port(s: str) -> tuple[str, int]:
    """HOST:PORT, [V6ADDR]:PORT or V6ADDR:PORT."""
    if s.startswith("["):
        host, _, port = s[1:].partition("]:")
    else:
        host, _, port = s.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {s!r}")
    return host, int(port)
