#!/usr/bin/env python3
"""A TCP link that can fail without stopping either end, for the fault-injection suite.

Listens on 127.0.0.1:PORT and forwards every connection to TARGET (host:port). It starts
passing bytes unchanged; SIGUSR1 switches it to its fault, SIGUSR2 back to passing:

  --fault blackhole   stops passing bytes in both directions and keeps every
                      connection open (no RST, no FIN): a cut cable or a dropped route
                      as both ends see it. Bytes sent meanwhile are read and dropped.
  --fault slow        holds every chunk --delay-ms in each direction, and holds a
                      --loss share of chunks one retransmission timeout longer, with
                      everything behind them on that connection (a lost TCP segment
                      stalls the stream until it is sent again).

Why a proxy and not `tc netem`: netem is not in this kernel (no sch_netem module), and
a proxy cannot drop bytes from a TCP stream without corrupting it, so loss is modelled
by what it costs TCP: the retransmission timeout, taken as one round trip of the link
plus Linux's 200 ms minimum (a small RPC sends too few segments after the lost one for
fast retransmit). Used by deploy/local/run-cluster.sh (--generator-link,
--etcd-link) and deploy/local/chaos.sh. Prints "link listening on 127.0.0.1:PORT".
"""

import argparse
import asyncio
import random
import signal
import sys
import time


class Link:
    def __init__(self, args):
        self.args = args
        self.faulty = False
        self.rng = random.Random(args.seed)
        self.connections = 0

    def retransmission_timeout_s(self):
        return 2 * self.args.delay_ms / 1000 + 0.2

    async def pipe(self, reader, writer):
        """Copies one direction until either end closes."""
        queue = asyncio.Queue()
        release_last = 0.0

        async def deliver():
            while True:
                item = await queue.get()
                if item is None:
                    break
                release, data = item
                wait = release - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                writer.write(data)
                await writer.drain()

        sender = asyncio.create_task(deliver())
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                if not self.faulty:
                    release = time.monotonic()
                elif self.args.fault == "blackhole":
                    continue  # read and dropped; the connection stays open
                else:
                    release = time.monotonic() + self.args.delay_ms / 1000
                    if self.rng.random() < self.args.loss:
                        release += self.retransmission_timeout_s()
                # Bytes leave in order: nothing overtakes a held chunk.
                release_last = max(release_last, release)
                await queue.put((release_last, data))
        except (ConnectionError, OSError):
            pass
        finally:
            # A black hole passes no FIN either: the other end keeps its connection
            # until the link passes bytes again (or this process ends).
            while self.faulty and self.args.fault == "blackhole":
                await asyncio.sleep(0.2)
            await queue.put(None)
            try:
                await sender
            except (ConnectionError, OSError):
                pass
            try:
                writer.close()
            except (ConnectionError, OSError):
                pass

    async def serve_one(self, in_reader, in_writer):
        self.connections += 1
        host, port = self.args.target.rsplit(":", 1)
        try:
            out_reader, out_writer = await asyncio.open_connection(host, int(port))
        except OSError:
            in_writer.close()
            return
        try:
            await asyncio.gather(self.pipe(in_reader, out_writer), self.pipe(out_reader, in_writer))
        except asyncio.CancelledError:
            pass  # the link is stopping


async def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--listen-port", type=int, required=True)
    p.add_argument("--target", required=True, help="host:port to forward to")
    p.add_argument("--fault", choices=["blackhole", "slow"], default="blackhole")
    p.add_argument("--delay-ms", type=float, default=200.0, help="slow: one-way delay")
    p.add_argument("--loss", type=float, default=0.05, help="slow: share of chunks lost once")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    link = Link(args)
    loop = asyncio.get_running_loop()

    def switch(faulty):
        link.faulty = faulty
        print(f"link {'faulty (' + args.fault + ')' if faulty else 'passing'}", flush=True)

    loop.add_signal_handler(signal.SIGUSR1, switch, True)
    loop.add_signal_handler(signal.SIGUSR2, switch, False)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    server = await asyncio.start_server(link.serve_one, "127.0.0.1", args.listen_port)
    print(f"link listening on 127.0.0.1:{args.listen_port} -> {args.target}", flush=True)
    async with server:
        await stop.wait()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
