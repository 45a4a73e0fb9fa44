"""The naive peer of the dial benchmark: what a developer writes first, in about sixty lines.

One process: an HTTP server on raw asyncio that takes ``POST /leads``, inserts the lead into
SQLite (WAL, synchronous=NORMAL, committed before the answer, as the daemon does), writes the
Originate to the AMI socket at once and answers 201. No validation beyond JSON, no retries,
no managers, no state: it is the floor our daemon's share of the delay is compared with.

Run as ``python -m bench.naive_dialer AMI_PORT DB_PATH``: prints its HTTP port on its first line.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import sys


async def main(ami_port: int, db_path: str) -> None:
    db = sqlite3.connect(db_path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("CREATE TABLE IF NOT EXISTS leads (id INTEGER PRIMARY KEY, phone TEXT, body TEXT)")
    ami_reader, ami = await asyncio.open_connection("127.0.0.1", ami_port)
    await ami_reader.readline()  # the banner
    ami.write(b"Action: Login\r\nUsername: leadrouter\r\nSecret: s3cret\r\nEvents: off\r\n\r\n")

    async def drain_ami() -> None:  # replies and events are read and dropped
        while await ami_reader.read(65536):
            pass

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while head := await reader.readuntil(b"\r\n\r\n"):
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            body = await reader.readexactly(length)
            lead = json.loads(body)
            phone = lead["phone"].lstrip("+")
            lead_id = db.execute("INSERT INTO leads (phone, body) VALUES (?, ?)", (phone, body)).lastrowid
            ami.write(
                f"Action: Originate\r\nChannel: Local/{phone}@sim-clients\r\nContext: leadrouter-hold\r\n"
                f"Exten: s\r\nPriority: 1\r\nAsync: true\r\nTimeout: 30000\r\nChannelId: naive-{lead_id}\r\n"
                f"Variable: LEADROUTER_LEAD={lead_id}\r\n\r\n".encode()
            )
            answer = json.dumps({"id": lead_id}).encode()
            writer.write(
                b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(answer), answer)
            )

    async def serve_until_closed(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await serve(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(serve_until_closed, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await asyncio.gather(drain_ami(), server.serve_forever())


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2]))
