"""A throwaway PostgreSQL server for tests: ``postgres_url`` (session scope).

Installs the Debian ``postgresql`` package if ``initdb`` is missing (as root), runs
``initdb`` in a fresh directory as the ``postgres`` user (initdb refuses to run as root),
starts the server on 127.0.0.1 with a free port and stops it by pid at teardown.
Use it from a test module with ``from pg_fixture import postgres_url  # noqa: F401``.
"""
from __future__ import annotations

import glob
import os
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest


def _bin_dir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


def _install() -> Path | None:
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return None
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
    subprocess.run(["apt-get", "install", "-y", "-q", "postgresql"], env=env, capture_output=True)
    return _bin_dir()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_postgres(cmd: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return cmd
    runuser = shutil.which("runuser")
    return [runuser, "-u", "postgres", "--", *cmd] if runuser else ["su", "postgres", "-c", shlex.join(cmd)]


@pytest.fixture(scope="session")
def postgres_url():
    bin_dir = _bin_dir() or _install()
    if bin_dir is None:
        pytest.skip("PostgreSQL is not installed and cannot be installed here")
    base = Path(tempfile.mkdtemp(prefix="wb-pg-"))
    base.chmod(0o755)
    data, sock = base / "data", base / "sock"
    sock.mkdir()
    if os.geteuid() == 0:
        shutil.chown(base, "postgres")
        shutil.chown(sock, "postgres")
    port = _free_port()
    subprocess.run(_as_postgres([str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust",
                                 "--no-sync"]), check=True, capture_output=True)
    options = f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
    subprocess.run(_as_postgres([str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(base / "log"),
                                 "-o", options, "-w", "start"]), check=True, capture_output=True)
    pid = int((data / "postmaster.pid").read_text().splitlines()[0])
    try:
        import psycopg

        deadline = time.time() + 30
        while True:
            try:
                with psycopg.connect(f"host=127.0.0.1 port={port} user=postgres dbname=postgres",
                                     autocommit=True) as conn:
                    conn.execute("CREATE DATABASE optuna_test")
                break
            except psycopg.OperationalError:
                if time.time() > deadline:
                    raise
                time.sleep(0.3)
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/optuna_test"
    finally:
        os.kill(pid, signal.SIGINT)  # "fast" shutdown of the server we started, by its pid
        for _ in range(100):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        shutil.rmtree(base, ignore_errors=True)
