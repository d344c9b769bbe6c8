"""sensord's API through Python's official gRPC library (grpcio), as a SIEM team writes it first.

Stubs come from proto/ by grpcio-tools (the test generates them and puts them on PYTHONPATH).
The channel has default options: no authority override, nothing tuned.

Prints one JSON object: health, status, the Watch events (each as `sensorctl watch -o json`
prints it: the JSON contract with `seq` first), the ListEvents sequence numbers, and the
certificate GetCertificate returned for the first event's leaf.
"""

import argparse
import hashlib
import json
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sensor.v1 import sensor_pb2, sensor_pb2_grpc

from target import add_target_args, channel


def event_line(ev):
    line = {"seq": ev.seq}
    line.update(json.loads(ev.json))
    return line


def main():
    p = argparse.ArgumentParser()
    add_target_args(p)
    p.add_argument("--sni", required=True, help="a server-name pattern to filter on")
    p.add_argument("--since", type=int, default=0)
    p.add_argument("--count", type=int, required=True)
    args = p.parse_args()

    out = {}
    with channel(args) as ch:
        health = health_pb2_grpc.HealthStub(ch)
        out["health"] = {
            name: health_pb2.HealthCheckResponse.ServingStatus.Name(
                health.Check(health_pb2.HealthCheckRequest(service=name), timeout=10).status
            )
            for name in ["", "sensor.v1.Sensor"]
        }

        sensor = sensor_pb2_grpc.SensorStub(ch)
        status = sensor.GetStatus(sensor_pb2.GetStatusRequest(), timeout=10)
        out["status"] = {"version": status.version, "last_seq": status.last_seq}

        flt = sensor_pb2.Filter(sni=[args.sni])
        stream = sensor.Watch(
            sensor_pb2.WatchRequest(filter=flt, since_seq=args.since), timeout=60
        )
        events = []
        for ev in stream:
            events.append(event_line(ev))
            if len(events) == args.count:
                stream.cancel()
                break
        out["watch"] = events

        listed = sensor.ListEvents(sensor_pb2.ListEventsRequest(filter=flt, limit=1000), timeout=10)
        out["list"] = sorted(ev.seq for ev in listed.events)

        leaf = events[0]["chain"][0]["sha256"]
        cert = sensor.GetCertificate(sensor_pb2.GetCertificateRequest(sha256=leaf), timeout=10)
        out["cert"] = {
            "asked": leaf,
            "der_sha256": hashlib.sha256(cert.der).hexdigest(),
            "summary_sha256": cert.summary.sha256,
            "pem": cert.pem.startswith("-----BEGIN CERTIFICATE-----"),
        }
    json.dump(out, sys.stdout)
    print()


if __name__ == "__main__":
    main()
