#!/usr/bin/env python3
"""A rogue generator, for the fault-injection suite (deploy/local/chaos.sh, scenario 10).

It does what finding H1 of the hardening issue describes an attacker doing from any pod:
it serves the Generator service with a poisonous ModelInfo (the honest generators' model
id, a context of 1 token, 1 byte per token), writes its own member record into etcd with
one unauthenticated put (etcd's JSON gateway, no credentials), and answers every
Generate with a forged "42" while keeping the prompts it is sent. A cluster that does
not refuse it loses its context length (every sample cut to one token) and leaks
prompts to it. Discovery must refuse it (docs/security.md, "Members").

Needs grpcio and grpcio-tools (the CI's .venv has both). Prints "rogue listening on
ADDR" once registered; on SIGTERM it deletes its record and prints what it was asked:
"rogue: N ModelInfo, M Generate".
"""

import argparse
import base64
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import urllib.request
from concurrent import futures

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def compile_protos(into):
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", "-I", os.path.join(REPO, "proto"),
         f"--python_out={into}", f"--grpc_python_out={into}",
         "ponder/v1/common.proto", "ponder/v1/generator.proto"],
        check=True)
    sys.path.insert(0, into)


def etcd(url, path, body):
    req = urllib.request.Request(url.rstrip("/") + path, data=json.dumps(body).encode(),
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.load(r)


def b64(s):
    return base64.b64encode(s.encode()).decode()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--etcd", required=True, help="etcd client URL, e.g. http://127.0.0.1:2379")
    p.add_argument("--cluster", default="local")
    p.add_argument("--model-id", required=True, help="the honest generators' model id")
    args = p.parse_args()

    work = tempfile.mkdtemp(prefix="ponder-rogue-")
    compile_protos(work)
    import grpc
    from ponder.v1 import generator_pb2 as pb
    from ponder.v1 import generator_pb2_grpc as rpc
    from ponder.v1 import common_pb2

    asked = {"ModelInfo": 0, "Generate": 0}
    lock = threading.Lock()

    class Rogue(rpc.GeneratorServicer):
        def ModelInfo(self, request, context):
            with lock:
                asked["ModelInfo"] += 1
            return common_pb2.ModelInfoResponse(
                model_id=args.model_id, context_length=1, max_token_bytes=1,
                vocab_size=101, parameters=1, instance_id="rogue")

        def Generate(self, request, context):
            with lock:
                asked["Generate"] += 1  # the prompt is in the rogue's hands now
            n = max(1, request.n)
            return pb.GenerateResponse(completions=[
                pb.Completion(index=i, text="The answer is 42.", tokens=1,
                              finish_reason=pb.FINISH_REASON_EOS) for i in range(n)])

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    rpc.add_GeneratorServicer_to_server(Rogue(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    address = f"127.0.0.1:{port}"
    key = f"/ponder/v1/{args.cluster}/generator/rogue"
    record = {"role": "generator", "instance_id": "rogue", "address": address,
              "model_id": "", "capacity": 0}
    etcd(args.etcd, "/v3/kv/put", {"key": b64(key), "value": b64(json.dumps(record))})
    print(f"rogue listening on {address}, registered as {key}", flush=True)

    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    done.wait()
    try:
        etcd(args.etcd, "/v3/kv/deleterange", {"key": b64(key)})
    except OSError:
        pass
    server.stop(1)
    print(f"rogue: {asked['ModelInfo']} ModelInfo, {asked['Generate']} Generate", flush=True)


if __name__ == "__main__":
    main()
