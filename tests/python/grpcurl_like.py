"""A stand-in for the two grpcurl commands docs/clients.md shows, so CI runs that block
as written: grpcurl is not packaged where CI installs from (Debian, PyPI, npm).

It does what grpcurl does for them, with stock libraries and no .proto files: it reads
the service's descriptors over server reflection (grpcio-reflection), builds the request
from the JSON body with protobuf's JSON mapping (field names as in the proto), makes the
call, and prints the response as JSON.

    grpcurl_like.py -plaintext -d JSON HOST:PORT SERVICE/METHOD
    grpcurl_like.py -plaintext HOST:PORT list SERVICE

Anything else (TLS flags, headers, other verbs) is refused: this is not grpcurl.
"""
import sys

import grpc
from google.protobuf import json_format
from google.protobuf.descriptor_pool import DescriptorPool
from google.protobuf.message_factory import GetMessageClass
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)


def usage(why):
    sys.exit(f"grpcurl_like.py: {why}\n{__doc__}")


def main(argv):
    if not argv or argv[0] != "-plaintext":
        usage("only -plaintext calls are supported")
    argv = argv[1:]
    body = None
    if argv[:1] == ["-d"]:
        if len(argv) < 2:
            usage("-d needs a JSON body")
        body, argv = argv[1], argv[2:]
    if len(argv) != 2 and not (len(argv) == 3 and argv[1] == "list"):
        usage(f"unexpected arguments {argv}")
    channel = grpc.insecure_channel(argv[0])
    pool = DescriptorPool(ProtoReflectionDescriptorDatabase(channel))
    if argv[1] == "list":
        for method in pool.FindServiceByName(argv[2]).methods:
            print(f"{argv[2]}.{method.name}")
        return
    service, _, name = argv[1].rpartition("/")
    method = pool.FindServiceByName(service).FindMethodByName(name)
    request_class = GetMessageClass(method.input_type)
    response_class = GetMessageClass(method.output_type)
    request = json_format.Parse(body or "{}", request_class())
    call = channel.unary_unary(
        f"/{service}/{name}",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=response_class.FromString,
    )
    print(json_format.MessageToJson(call(request, timeout=60)))


if __name__ == "__main__":
    main(sys.argv[1:])
