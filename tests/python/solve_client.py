"""A client for ponder.v1.Orchestrator written with Python grpcio, from proto/ only.

Usage: solve_client.py HOST:PORT
Generates stubs from proto/ponder/v1/*.proto into a temporary directory (grpcio-tools),
calls Solve on a question and on a malformed request, and prints what came back.
"""
import importlib
import pathlib
import sys
import tempfile

import grpc
from grpc_tools import protoc


def stubs(root: pathlib.Path, out: str):
    files = [str(p.relative_to(root / "proto")) for p in sorted((root / "proto/ponder/v1").glob("*.proto"))]
    args = ["protoc", f"-I{root / 'proto'}", f"--python_out={out}", f"--grpc_python_out={out}", *files]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    sys.path.insert(0, out)
    return (
        importlib.import_module("ponder.v1.orchestrator_pb2"),
        importlib.import_module("ponder.v1.orchestrator_pb2_grpc"),
    )


def main():
    addr = sys.argv[1]
    root = pathlib.Path(__file__).resolve().parents[2]
    with tempfile.TemporaryDirectory() as out:
        pb, rpc = stubs(root, out)
        with grpc.insecure_channel(addr) as channel:
            stub = rpc.OrchestratorStub(channel)
            req = pb.SolveRequest(
                question="47+38",
                budget=pb.Budget(max_generations=8),
                strategy=pb.Strategy(weighted_best_of_n=pb.WeightedBestOfN()),
                seed=7,
            )
            resp = stub.Solve(req, timeout=60)
            print(f"answer {resp.answer}")
            print(f"strategy {resp.strategy} generations {resp.usage.generations}")
            try:
                stub.Solve(pb.SolveRequest(question=""), timeout=10)
                print("empty question accepted?!")
            except grpc.RpcError as e:
                print(f"{e.code().name}: {e.details()}")


if __name__ == "__main__":
    main()
