"""A real HTTP server on loopback streaming OpenAI-style SSE completions (tests of the load generator).

    python tests/sse_server.py TOKENS GAP_S BODIES_FILE   # prints its port, then serves until killed
"""

import asyncio
import json
import sys


async def main(tokens: int, gap_s: float, bodies: str) -> None:
    async def handle(reader, writer):
        length = 0
        while (line := (await reader.readline()).decode().strip()):
            if line.lower().startswith("content-length"):
                length = int(line.split(":")[1])
        with open(bodies, "a") as f:
            f.write((await reader.readexactly(length)).decode() + "\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
        events = [{"choices": [{"text": "x"}]} for _ in range(tokens)]
        events.append({"choices": [], "usage": {"completion_tokens": tokens}})
        for ev in events:
            await asyncio.sleep(gap_s)
            data = f"data: {json.dumps(ev)}\n\n".encode()
            writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            await writer.drain()
        writer.write(b"e\r\ndata: [DONE]\n\n\r\n0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]))
