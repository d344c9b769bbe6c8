"""An OTLP logs receiver for the tests: OpenTelemetry's own generated protobufs (PyPI
opentelemetry-proto) decode what sensord sends, over gRPC (LogsService/Export) and over HTTP
(POST /v1/logs, application/x-protobuf), as an OpenTelemetry Collector's otlp receiver takes it.
(No Collector is packaged for this machine; see the README.)

Each log record becomes one JSON line in --out: the record as protobuf's JSON mapping gives it,
its resource's attributes, its scope, and the transport it came by. --refuse N answers the
first N requests with a retryable error (gRPC UNAVAILABLE, HTTP 503), to test retries.

Usage: receiver.py --grpc-port P --http-port Q --out FILE [--refuse N]
"""

import argparse
import json
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
from google.protobuf.json_format import MessageToDict
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc

lock = threading.Lock()
state = {"refuse": 0}


def attributes(kvs):
    out = {}
    for kv in kvs:
        out[kv.key] = MessageToDict(kv.value)
    return out


def record(request, transport, out):
    with lock, open(out, "a", encoding="utf-8") as f:
        for rl in request.resource_logs:
            resource = attributes(rl.resource.attributes)
            for sl in rl.scope_logs:
                for lr in sl.log_records:
                    line = {
                        "transport": transport,
                        "resource": resource,
                        "scope": {"name": sl.scope.name, "version": sl.scope.version},
                        "record": MessageToDict(lr),
                        "attributes": attributes(lr.attributes),
                    }
                    f.write(json.dumps(line) + "\n")


def refuse_now():
    with lock:
        if state["refuse"] > 0:
            state["refuse"] -= 1
            return True
    return False


class Logs(logs_service_pb2_grpc.LogsServiceServicer):
    def __init__(self, out):
        self.out = out

    def Export(self, request, context):
        if refuse_now():
            context.abort(grpc.StatusCode.UNAVAILABLE, "refused by the test")
        record(request, "grpc", self.out)
        return logs_service_pb2.ExportLogsServiceResponse()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--grpc-port", type=int, required=True)
    ap.add_argument("--http-port", type=int, required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--refuse", type=int, default=0)
    args = ap.parse_args()
    state["refuse"] = args.refuse

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    logs_service_pb2_grpc.add_LogsServiceServicer_to_server(Logs(args.out), server)
    server.add_insecure_port(f"127.0.0.1:{args.grpc_port}")
    server.start()

    out = args.out

    class Http(BaseHTTPRequestHandler):
        def do_POST(self):
            if self.path != "/v1/logs":
                self.send_error(404)
                return
            if self.headers.get("Content-Type") != "application/x-protobuf":
                self.send_error(415)
                return
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if refuse_now():
                self.send_response(503)
                self.send_header("Retry-After", "1")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            request = logs_service_pb2.ExportLogsServiceRequest.FromString(body)
            record(request, "http", out)
            reply = logs_service_pb2.ExportLogsServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args):
            pass

    http = ThreadingHTTPServer(("127.0.0.1", args.http_port), Http)
    print("ready", flush=True)
    try:
        http.serve_forever()
    finally:
        server.stop(0)


if __name__ == "__main__":
    main()
