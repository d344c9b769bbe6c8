"""Where the test clients connect: the Unix socket, or the TCP listener with mTLS."""

import grpc


def add_target_args(parser):
    parser.add_argument("--target", required=True, help="unix:/path/to/sensord.sock or host:port")
    parser.add_argument("--ca", help="the server's CA (TCP)")
    parser.add_argument("--cert", help="the client's certificate (TCP)")
    parser.add_argument("--key", help="the client's key (TCP)")


def channel(args):
    """A channel with default options, as a user writes it first."""
    if args.ca:
        with open(args.ca, "rb") as ca, open(args.key, "rb") as key, open(args.cert, "rb") as cert:
            creds = grpc.ssl_channel_credentials(ca.read(), key.read(), cert.read())
        return grpc.secure_channel(args.target, creds)
    return grpc.insecure_channel(args.target)
