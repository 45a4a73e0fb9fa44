"""A PostgreSQL for the tests and the benchmarks: the one on this machine, or a throwaway of our own.

``postgres_server`` yields a server URL without a database name. It uses the server at
``LEADROUTER_TEST_POSTGRES`` (default: 127.0.0.1:5432, user postgres, trust) when it answers,
and otherwise starts one from the Debian ``postgresql`` package's binaries: ``initdb`` into a
temporary directory, a free loopback port, its unix socket in that directory, gone afterwards.
``scratch_database`` makes a database of a unique name on it and drops it after the block, so
runs that share a server never see each other's rows.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
from sqlalchemy.engine import URL, make_url

from leadrouter.broker import free_port, reachable

DEFAULT_SERVER = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
START_WITHIN = 30.0  # seconds for initdb's server to accept connections


def _binary(name: str) -> str:
    """Debian keeps the server's binaries in /usr/lib/postgresql/<version>/bin, off the PATH."""
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None)
    if found is None:
        raise FileNotFoundError(f"{name} is not installed (Debian: apt-get install postgresql)")
    return found


def _as_user() -> tuple[list[str], str | None]:
    """The server refuses to run as root: as root, run it as the postgres (or nobody) user."""
    if os.geteuid() != 0:
        return [], None
    for user in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(user)
            return ["runuser", "-u", user, "--"], user
    raise RuntimeError("running as root with no postgres or nobody user to run the server as")


@contextlib.contextmanager
def private_postgres() -> Iterator[str]:
    """Run a fresh PostgreSQL cluster for the block's lifetime; yields its server URL (user postgres, trust)."""
    initdb, server = _binary("initdb"), _binary("postgres")
    prefix, user = _as_user()
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="leadrouter-pg-") as tmp:
        data = Path(tmp) / "data"
        if user is not None:
            os.chmod(tmp, 0o755)
            shutil.chown(tmp, user)
        subprocess.run(
            [*prefix, initdb, "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"],
            check=True,
            capture_output=True,
        )
        # Durability is not what a throwaway server is for: fsync off makes migrations and tests fast.
        options = ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
        address = ["-p", str(port), "-k", tmp, "-c", "listen_addresses=127.0.0.1"]
        proc = subprocess.Popen(
            [*prefix, server, "-D", str(data), *address, *options],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            deadline = time.monotonic() + START_WITHIN
            while not reachable("127.0.0.1", port):
                if proc.poll() is not None:
                    raise RuntimeError(f"postgres exited: {proc.stderr.read().decode() if proc.stderr else ''}")
                if time.monotonic() > deadline:
                    raise RuntimeError("postgres did not start listening")
                time.sleep(0.05)
            yield f"postgresql+asyncpg://postgres@127.0.0.1:{port}/postgres"
        finally:
            proc.terminate()  # SIGTERM: "smart" shutdown, which the scratch databases' drop made quick
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """The configured (or default) server when it answers, else a private one."""
    url = make_url(os.environ.get("LEADROUTER_TEST_POSTGRES", DEFAULT_SERVER))
    if reachable(url.host or "127.0.0.1", url.port or 5432):
        yield url.render_as_string(hide_password=False)
        return
    with private_postgres() as private:
        yield private


def _dsn(url: URL) -> str:
    """asyncpg's own DSN for a SQLAlchemy URL."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def with_database(server: str, name: str) -> str:
    return make_url(server).set(database=name).render_as_string(hide_password=False)


async def create_database(server: str, name: str, template: str | None = None) -> str:
    """CREATE DATABASE ``name`` (a copy of ``template``, if given), for tests and benchmarks; returns its URL."""
    conn = await asyncpg.connect(_dsn(make_url(server)))
    try:
        copy = f' TEMPLATE "{template}"' if template else ""
        await conn.execute(f'CREATE DATABASE "{name}"{copy}')
        # A scratch database's commits need not wait for a disk shared with everything else on the box.
        await conn.execute(f'ALTER DATABASE "{name}" SET synchronous_commit = off')
    finally:
        await conn.close()
    return with_database(server, name)


async def drop_database(server: str, name: str) -> None:
    conn = await asyncpg.connect(_dsn(make_url(server)))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def unique_name(prefix: str) -> str:
    return f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:10]}"


@contextlib.asynccontextmanager
async def scratch_database(server: str, prefix: str = "leadrouter", template: str | None = None) -> AsyncIterator[str]:
    """A database of its own on ``server`` for the block; dropped after it, whatever happened."""
    name = unique_name(prefix)
    url = await create_database(server, name, template)
    try:
        yield url
    finally:
        await drop_database(server, name)
