"""Reads ponder.v1's API from a running server the way generic gRPC tools do: with the
stock grpcio-reflection client, which speaks reflection v1alpha, and no .proto files.

Usage: reflection_client.py HOST:PORT
Prints every service the server lists, then each method of ponder.v1.Orchestrator with
its request and response types, resolved from the descriptors the server sends.
"""
import sys

import grpc
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)


def main():
    channel = grpc.insecure_channel(sys.argv[1])
    database = ProtoReflectionDescriptorDatabase(channel)
    for name in database.get_services():
        print("service", name)
    pool = DescriptorPool(database)
    orchestrator = pool.FindServiceByName("ponder.v1.Orchestrator")
    for method in orchestrator.methods:
        print("method", method.name, method.input_type.full_name, method.output_type.full_name)


if __name__ == "__main__":
    main()
