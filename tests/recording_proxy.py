"""A recording TCP proxy, run as its own process: ``python -m tests.recording_proxy HOST:PORT FILE``
listens on a free port of 127.0.0.1 (printed on its first line of output), forwards every
connection to HOST:PORT byte for byte both ways, and appends every byte a client sent to FILE.

Between slm-lsp and a real server it records exactly what left the editor's machine: request
lines, headers and bodies, whatever the HTTP framing (keep-alive, chunked, streamed). It parses
nothing, so it cannot miss what a parser would skip.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path


class RecordingProxy:
    """The proxy process; ``url`` points at it, ``sent()`` is what clients sent through it."""

    def __init__(self, target: str, record: Path) -> None:
        self.record = record
        record.write_bytes(b"")
        self.process = subprocess.Popen([sys.executable, "-m", "tests.recording_proxy", target, str(record)],
                                        stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        line = self.process.stdout.readline().strip()
        if not line.isdigit():
            self.process.kill()
            raise RuntimeError(f"the recording proxy did not start: {line!r}")
        self.port = int(line)
        self.url = f"http://127.0.0.1:{self.port}"

    def sent(self) -> str:
        return self.record.read_bytes().decode("utf-8", errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, record: Path | None) -> None:
    try:
        while data := await reader.read(65536):
            if record is not None:
                with record.open("ab") as fh:  # appended before it is forwarded: nothing unrecorded
                    fh.write(data)
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


async def _serve(host: str, port: int, record: Path) -> None:
    async def handle(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            server_reader, server_writer = await asyncio.open_connection(host, port)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(_pipe(client_reader, server_writer, record), _pipe(server_reader, client_writer, None))

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    target_host, _, target_port = sys.argv[1].rpartition(":")
    asyncio.run(_serve(target_host, int(target_port), Path(sys.argv[2])))
