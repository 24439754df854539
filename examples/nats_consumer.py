"""A consumer of the shop's events on NATS JetStream (what `nats:events` publishes).

    python examples/nats_consumer.py [--url nats://127.0.0.1:4222] [--stream SHOP_EVENTS]
        [--subjects 'shop.events.Order.>'] [--durable billing] [--max N]

A durable pull consumer: the server remembers what it acknowledged, so a restart resumes
after the last acked event. Events arrive in log order; de-duplicate on ``id`` (also the
``Nats-Msg-Id`` header) if you process with side effects and may crash before the ack.
"""

from __future__ import annotations

import argparse
import asyncio
import json

import nats
from nats.errors import TimeoutError as FetchTimeout


async def consume(url: str, stream: str, subjects: str, durable: str, most: int | None) -> None:
    nc = await nats.connect(url)
    sub = await nc.jetstream().pull_subscribe(subjects, durable=durable, stream=stream)
    seen = 0
    while most is None or seen < most:
        # Never fetch more than is left to take: a fetched message is delivered to this
        # consumer, and one not acknowledged now would come back only after the ack wait.
        want = 100 if most is None else min(100, most - seen)
        try:
            batch = await sub.fetch(want, timeout=2)
        except FetchTimeout:
            continue  # nothing new yet
        for msg in batch:
            event = json.loads(msg.data)
            print(event["id"], event["event_type"], event["aggregate_id"], flush=True)
            await msg.ack()  # done with it: not redelivered to this durable consumer
            seen += 1
    await nc.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="nats://127.0.0.1:4222")
    parser.add_argument("--stream", default="SHOP_EVENTS")
    parser.add_argument("--subjects", default="shop.events.>")
    parser.add_argument("--durable", default="example")
    parser.add_argument("--max", type=int, help="stop after this many events")
    args = parser.parse_args()
    asyncio.run(consume(args.url, args.stream, args.subjects, args.durable, args.max))


if __name__ == "__main__":
    main()
