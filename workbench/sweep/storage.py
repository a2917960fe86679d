"""Where a study lives: a journal file by default, any Optuna RDB URL otherwise.

Secrets: a storage URL may carry a database password. The URL travels to trial processes in
the environment variable ``WORKBENCH_SWEEP_STORAGE`` (set by the sweeper for the jobs it
launches), never in a config; configs and logs only ever see ``redact(url)``.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

from workbench.sweep.errors import StorageError

ENV_STORAGE = "WORKBENCH_SWEEP_STORAGE"
DEFAULT_DIR = "sweeps_db"
STORAGE_FORMS = ("a journal file path, sqlite:///PATH or postgresql+psycopg://user@host:5432/db "
                 "(password in $PGPASSWORD, ~/.pgpass or --storage-file)")
_DEFAULT_PORTS = {"postgresql": 5432, "mysql": 3306}
REACH_TIMEOUT_S = 3.0


@dataclass(frozen=True)
class StorageSpec:
    url: str  # a journal file path or an RDB URL; may hold a password: never log it
    kind: str  # "journal" or "rdb"

    @property
    def path(self) -> Path | None:
        """The local file behind the storage (journal file or SQLite database), if any."""
        if self.kind == "journal":
            return Path(self.url)
        if self.url.startswith("sqlite:///"):
            rest = self.url[len("sqlite:///"):].split("?")[0]
            return Path(rest) if rest and rest != ":memory:" else None
        return None

    @property
    def redacted(self) -> str:
        return redact(self.url)

    @property
    def dialect(self) -> str:
        return "journal" if self.kind == "journal" else self.url.split(":", 1)[0].split("+")[0]


def resolve_storage(
    storage: str | None, study_name: str, base_dir: Path, storage_dir: str = DEFAULT_DIR
) -> StorageSpec:
    """Pick the storage: explicit setting, else $WORKBENCH_SWEEP_STORAGE, else a journal file
    ``<base_dir>/<storage_dir>/<study_name>.journal`` (stable, so a rerun resumes the study).
    Relative paths are taken from ``base_dir`` (the directory the sweep was started in)."""
    storage = storage or os.environ.get(ENV_STORAGE) or None
    if storage is None:
        path = Path(storage_dir).expanduser()
        path = path if path.is_absolute() else base_dir / path
        return StorageSpec(str((path / f"{study_name}.journal").resolve()), "journal")
    storage = str(storage)
    if "://" in storage:
        return StorageSpec(storage, "rdb")
    path = Path(storage.removeprefix("journal:")).expanduser()
    if not path.is_absolute():
        path = base_dir / path
    return StorageSpec(str(path.resolve()), "journal")


def check_storage(spec: StorageSpec) -> None:
    """Raise StorageError, in one line, when the storage cannot work; creates nothing."""
    if spec.kind == "journal":
        _check_writable_file(Path(spec.url), "journal file", spec.redacted)
        return
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        url = make_url(spec.url)
        url.get_dialect()
    except NoSuchModuleError:  # an ArgumentError too: test it first
        scheme = spec.url.split("://", 1)[0]
        raise StorageError(f"storage {spec.redacted!r}: unknown scheme {scheme!r} (or its driver is not "
                           f"installed); use {STORAGE_FORMS}") from None
    except ArgumentError:
        raise StorageError(f"storage {spec.redacted!r} is not a database URL; use {STORAGE_FORMS}") from None
    if url.get_backend_name() == "sqlite":
        if spec.path is not None:
            _check_writable_file(spec.path, "SQLite file", spec.redacted)
        return
    if url.host:  # no host: a local socket, which the driver reports on clearly itself
        _check_reachable(url.host, url.port or _DEFAULT_PORTS.get(url.get_backend_name()), spec.redacted)


def _check_writable_file(path: Path, what: str, shown: str) -> None:
    if path.is_dir():
        raise StorageError(f"storage {shown}: {path} is a directory, not a {what}; name a file inside it "
                           f"(e.g. {path / 'study.journal'})")
    existing = path if path.exists() else next(p for p in path.parents if p.exists())
    if existing != path and not existing.is_dir():
        raise StorageError(f"storage {shown}: {what} {path} is not writable: {existing} is a file, not a directory")
    try:
        if existing == path:
            with open(path, "ab"):  # opens for writing, changes nothing
                pass
        else:
            with tempfile.TemporaryFile(dir=existing):  # gone as soon as it is closed
                pass
    except OSError as err:
        raise StorageError(f"storage {shown}: {what} {path} is not writable ({err.strerror} in "
                           f"{existing})") from None


def _check_reachable(host: str, port: int | None, shown: str) -> None:
    if port is None:
        return
    try:
        socket.create_connection((host, port), timeout=REACH_TIMEOUT_S).close()
    except OSError as err:
        raise StorageError(f"storage {shown}: database server not reachable at {host}:{port} "
                           f"({err.strerror or err or type(err).__name__}); start it or fix the URL") from None


def redact(url: str) -> str:
    """The URL with any password replaced by ``***``."""
    if "://" not in url:
        return url
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy understands: hide everything before '@'
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}" if "@" in rest else url


_OPEN: dict[str, BaseStorage] = {}


def open_storage(spec: StorageSpec) -> BaseStorage:
    """The Optuna storage for ``spec``, cached per process (a trial process reuses the
    sweeper's storage instead of reconnecting or replaying the journal again)."""
    cached = _OPEN.get(spec.url)
    if cached is not None:
        return cached
    if spec.kind == "journal":
        path = Path(spec.url)
        path.parent.mkdir(parents=True, exist_ok=True)
        # the open()-based lock works on every local file system; the default symlink
        # lock does too but leaves stale links behind when a worker is SIGKILLed mid-write
        backend = JournalFileBackend(str(path), lock_obj=JournalFileOpenLock(str(path)))
        storage: BaseStorage = JournalStorage(backend)
    else:
        kwargs: dict = {"pool_pre_ping": True}
        if spec.dialect == "sqlite":
            if spec.path is not None:
                spec.path.parent.mkdir(parents=True, exist_ok=True)
            kwargs = {"connect_args": {"timeout": 60}}  # several writers wait instead of failing
        storage = RDBStorage(spec.url, engine_kwargs=kwargs)
    _OPEN[spec.url] = storage
    return storage


def load_study(spec: StorageSpec, study_name: str, **kwargs) -> optuna.Study:
    return optuna.load_study(study_name=study_name, storage=open_storage(spec), **kwargs)


@contextlib.contextmanager
def budget_lock(spec: StorageSpec, study_name: str) -> Iterator[bool]:
    """Serialise "count the trials, then ask one" across workers of one study.

    Journal and SQLite files: an flock beside the file (all workers share the machine).
    PostgreSQL: a session advisory lock keyed by the study name (workers on any machine).
    Other databases: no lock (yields False); the caller then corrects an overshoot after
    asking (see StudyDriver.reserve).
    """
    path = spec.path
    if path is not None:
        lock_path = Path(f"{path}.{study_name}.budget.lock")
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        with open(lock_path, "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield True
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
        return
    if spec.dialect == "postgresql":
        key = zlib.crc32(f"workbench-budget:{study_name}".encode()) - 2**31
        from sqlalchemy import text

        with _lock_engine(spec.url).connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": key})
            conn.commit()
            try:
                yield True
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                conn.commit()
        return
    yield False


_ENGINES: dict[str, object] = {}


def _lock_engine(url: str):
    if url not in _ENGINES:
        from sqlalchemy import create_engine

        _ENGINES[url] = create_engine(url, pool_size=1, max_overflow=0, pool_pre_ping=True)
    return _ENGINES[url]
