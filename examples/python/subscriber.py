"""Subscribe to sensord's events from Python: a starting point for a SIEM integration.

    pip install grpcio grpcio-tools          # from the repository's root:
    python -m grpc_tools.protoc -I proto/proto --python_out=examples/python \
        --grpc_python_out=examples/python sensor/v1/sensor.proto
    python examples/python/subscriber.py --socket /run/sensor/sensord.sock --min-severity medium

Each event arrives once, in order, with its sequence number; keep the last one and pass it as
--since after a restart to miss nothing. Prints one line per event: the JSON contract, with
`seq` first (the same line `sensorctl watch -o json` prints).
"""

import argparse
import json

import grpc

from sensor.v1 import sensor_pb2, sensor_pb2_grpc

SEVERITIES = ["info", "low", "medium", "high", "critical"]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--socket", default="/run/sensor/sensord.sock")
    p.add_argument("--since", type=int, default=0, help="resume after this sequence number")
    p.add_argument("--min-severity", choices=SEVERITIES, default="info")
    p.add_argument("--sni", action="append", default=[], help="server-name pattern (*, ?)")
    p.add_argument("--count", type=int, default=0, help="stop after this many events")
    args = p.parse_args()

    severity = sensor_pb2.Severity.Value("SEVERITY_" + args.min_severity.upper())
    request = sensor_pb2.WatchRequest(
        filter=sensor_pb2.Filter(min_severity=severity, sni=args.sni),
        since_seq=args.since,
    )
    with grpc.insecure_channel(f"unix:{args.socket}") as channel:
        stream = sensor_pb2_grpc.SensorStub(channel).Watch(request)
        for n, event in enumerate(stream, start=1):
            print(json.dumps({"seq": event.seq, **json.loads(event.json)}), flush=True)
            if n == args.count:
                stream.cancel()
                break


if __name__ == "__main__":
    main()
