"""A bare grpc.aio forwarding proxy: bytes in, bytes out, metadata passed through.

No signing, no store, no routing: the floor for one Python hop, and the yardstick the
gateway's CPU per call is held to.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import grpc

from benchmarks.common import install_uvloop


class Forward(grpc.GenericRpcHandler):  # type: ignore[misc]
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.channel = channel

    def service(self, details: Any) -> Any:
        method = details.method
        call = self.channel.unary_unary(method)

        async def handle(body: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
            metadata = tuple((k, v) for k, v in context.invocation_metadata() or ()
                             if not k.startswith(":") and k not in ("user-agent", "te"))
            outgoing = call(body, metadata=metadata)
            answer: bytes = await outgoing
            context.set_trailing_metadata(tuple(await outgoing.trailing_metadata() or ()))
            return answer

        return grpc.unary_unary_rpc_method_handler(handle)


async def serve(port: int, upstream: str) -> None:
    channel = grpc.aio.insecure_channel(upstream)
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers((Forward(channel),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print("READY", flush=True)
    await server.wait_for_termination()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    args = parser.parse_args()
    install_uvloop()
    asyncio.run(serve(args.port, args.upstream))


if __name__ == "__main__":
    main()
