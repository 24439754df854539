"""A burst of concurrent token reads from a process of its own (as a real client is):
``python -m tests.support.burst ADDRESS PRODUCT_ID TOKEN CALLS ROUNDS DEADLINE...``
prints a JSON object: status name -> count, per deadline.

Each round has every call in flight at once; they start within the first
:data:`SPREAD_S` (independent clients never send in the same microsecond), over
connections of at most :data:`PER_CONNECTION` calls each (well under the streams a server
lets one connection have at once, ``CQRS_GRPC_MAX_STREAMS_PER_CONNECTION``: more would queue in
the client, past their deadlines)."""

from __future__ import annotations

import asyncio
import json
import math
import random
import sys
from collections import Counter

import grpc

from common.pb.shop.v1 import query_service_pb2 as qpb
from common.pb.shop.v1 import query_service_pb2_grpc as qpb_grpc

SPREAD_S = 0.2
PER_CONNECTION = 75


async def burst(
    address: str, product: str, token: str, calls: int, rounds: int, deadlines: list[float]
) -> dict[str, Counter[str]]:
    codes: dict[str, Counter[str]] = {str(d): Counter() for d in deadlines}
    rng = random.Random(3)
    # A local subchannel pool: channels to one target would otherwise share a connection.
    options = [("grpc.use_local_subchannel_pool", 1)]
    channels = [
        grpc.aio.insecure_channel(address, options=options)
        for _ in range(math.ceil(calls / PER_CONNECTION))
    ]
    try:
        stubs = [qpb_grpc.QueryServiceStub(channel) for channel in channels]

        async def one(n: int) -> None:
            read = stubs[n % len(stubs)]
            await asyncio.sleep(rng.uniform(0, SPREAD_S))
            deadline = deadlines[n % len(deadlines)]
            source = (qpb.SOURCE_PROJECTION, qpb.SOURCE_READ_MODEL)[n % 2]
            request = qpb.GetProductRequest(id=product, source=source, consistency_token=token)
            try:
                await read.GetProduct(request, timeout=deadline)
                codes[str(deadline)]["OK"] += 1
            except grpc.aio.AioRpcError as exc:
                codes[str(deadline)][exc.code().name] += 1

        for _ in range(rounds):
            await asyncio.gather(*(one(n) for n in range(calls)))
    finally:
        for channel in channels:
            await channel.close()
    return codes


if __name__ == "__main__":
    address, product, token, calls, rounds, *deadlines = sys.argv[1:]
    result = asyncio.run(
        burst(address, product, token, int(calls), int(rounds), [float(d) for d in deadlines])
    )
    print(json.dumps(result))
