"""The floor of an idle stream: a bare ``grpc.aio`` server whose one server-streaming
method sends one message and then waits, with none of our code (``python -m
bench.watch_floor PORT``; prints ``ready`` once serving). ``watch-idle`` holds as many
streams open on it as on the read server, so what grpc itself costs per open stream is
measured in the same run (``bench/watch.py``)."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import grpc

METHOD = "/bench.Floor/Watch"


async def _watch(request: bytes, context: grpc.aio.ServicerContext) -> Any:
    yield b"\x08\x01"  # a small message, as a Watch snapshot's header
    await asyncio.Event().wait()


async def serve(port: int) -> None:
    server = grpc.aio.server(options=[("grpc.max_concurrent_streams", 250)])
    handler = grpc.unary_stream_rpc_method_handler(_watch)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("bench.Floor", {"Watch": handler}),)
    )
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print("ready", flush=True)
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1])))
