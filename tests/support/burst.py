"""A burst of concurrent token reads from a process of its own (as a real client is):
``python -m tests.support.burst ADDRESS PRODUCT_ID TOKEN CALLS ROUNDS DEADLINE...``
prints a JSON object: status name -> count, per deadline.

Each round has every call in flight at once; they start within the first
:data:`SPREAD_S` (independent clients never send in the same microsecond)."""

from __future__ import annotations

import asyncio
import json
import random
import sys
from collections import Counter

import grpc

from common.pb.shop.v1 import query_service_pb2 as qpb
from common.pb.shop.v1 import query_service_pb2_grpc as qpb_grpc

SPREAD_S = 0.2


async def burst(
    address: str, product: str, token: str, calls: int, rounds: int, deadlines: list[float]
) -> dict[str, Counter[str]]:
    codes: dict[str, Counter[str]] = {str(d): Counter() for d in deadlines}
    rng = random.Random(3)
    async with grpc.aio.insecure_channel(address) as channel:
        read = qpb_grpc.QueryServiceStub(channel)

        async def one(n: int) -> None:
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
    return codes


if __name__ == "__main__":
    address, product, token, calls, rounds, *deadlines = sys.argv[1:]
    result = asyncio.run(
        burst(address, product, token, int(calls), int(rounds), [float(d) for d in deadlines])
    )
    print(json.dumps(result))
