"""A client that knows nothing of sensord's API but the address: it discovers the services by
server reflection (grpcio-reflection, which speaks grpc.reflection.v1alpha), builds the request
and response types from the descriptors it was sent, and calls GetStatus.

Prints one JSON object: the services listed and the status, as JSON.
"""

import argparse
import json
import sys

import grpc
from google.protobuf import descriptor_pool, json_format, message_factory
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from target import add_target_args, channel


def main():
    p = argparse.ArgumentParser()
    add_target_args(p)
    args = p.parse_args()

    with channel(args) as ch:
        db = ProtoReflectionDescriptorDatabase(ch)
        services = sorted(db.get_services())
        pool = descriptor_pool.DescriptorPool(db)
        # Find the service that has a GetStatus method, without naming its package.
        method = None
        for name in services:
            service = pool.FindServiceByName(name)
            for m in service.methods:
                if m.name == "GetStatus":
                    method = m
        if method is None:
            sys.exit("no service has GetStatus")
        request = message_factory.GetMessageClass(method.input_type)
        response = message_factory.GetMessageClass(method.output_type)
        call = ch.unary_unary(
            f"/{method.containing_service.full_name}/{method.name}",
            request_serializer=request.SerializeToString,
            response_deserializer=response.FromString,
        )
        status = call(request(), timeout=10)
        out = {
            "services": services,
            "method": method.full_name,
            "status": json_format.MessageToDict(status, preserving_proto_field_name=True),
        }
    json.dump(out, sys.stdout)
    print()


if __name__ == "__main__":
    main()
