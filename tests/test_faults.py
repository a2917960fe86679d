"""The machine fails under a run: a full disk, a read-only directory, a W&B server that refuses
connections. One line naming the path and the cause; the last good checkpoint is kept."""
from __future__ import annotations

import errno
import json
import os
import socket
import sys
from pathlib import Path

import pytest
import torch

from conftest import TINY
from workbench.agents.common import checkpoint
from workbench.agents.common.checkpoint import CheckpointWriteError, save_atomic
from workbench.cli import main
from workbench.tracking import LoggerConfig, Tracker
from workbench.tracking.run import ServerRefused, check_server_accepts


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fill_the_disk_after(monkeypatch, good_saves: int) -> None:
    """torch.save writes a little, then fails as a full disk does, after ``good_saves`` saves."""
    real_save, calls = torch.save, []

    def save(obj, f, *args, **kwargs):
        calls.append(1)
        if len(calls) <= good_saves:
            return real_save(obj, f, *args, **kwargs)
        f.write(b"PK\x03\x04 half a checkpoint")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(checkpoint.torch, "save", save)


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    try:
        code = main(argv)
    except SystemExit as done:
        code = done.code
    return code, capsys.readouterr().err


def test_full_disk_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    save_atomic({"model": {"w": torch.ones(3)}}, path)
    good = path.read_bytes()
    fill_the_disk_after(monkeypatch, good_saves=0)
    with pytest.raises(CheckpointWriteError) as refused:
        save_atomic({"model": {"w": torch.zeros(3)}}, path)
    message = str(refused.value)
    assert str(path) in message and "No space left on device" in message and "last good last.ckpt is kept" in message
    assert path.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"], "the temp file was left behind"


def test_the_checkpoint_is_fsynced_before_the_rename(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(checkpoint.os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(checkpoint.os, "replace", lambda a, b: (events.append("rename"), real_replace(a, b))[1])
    save_atomic({"model": {}}, tmp_path / "last.ckpt")
    assert events[:2] == ["fsync", "rename"]


def test_full_disk_mid_training_is_one_line_and_keeps_last_ckpt(tmp_path, monkeypatch, capsys):
    fill_the_disk_after(monkeypatch, good_saves=1)
    run = tmp_path / "run"
    code, err = run_cli(["train", *TINY, "agent.save_last_checkpoint_every=1", "logger.mode=disabled",
                         f"hydra.run.dir={run}"], capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, err
    assert f"cannot write checkpoint {run}" in lines[0] and "No space left on device" in lines[0]
    assert "is kept" in lines[0]
    assert "model" in checkpoint.load_checked(run / "last.ckpt")  # the first save, whole


def test_read_only_output_directory_is_one_line(tmp_path, monkeypatch, capsys):
    read_only = tmp_path / "ro"
    real_mkdir = Path.mkdir

    def mkdir(self, *args, **kwargs):
        if str(self).startswith(str(read_only)):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    code, err = run_cli(["train", "logger.mode=disabled", f"hydra.run.dir={read_only}/run"], capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, err
    assert "Read-only file system" in lines[0] and f"{read_only}/run" in lines[0]
    assert not read_only.exists()


def test_a_refused_wandb_server_is_detected_at_once():
    with pytest.raises(ServerRefused, match=r"127\.0\.0\.1:\d+ refused the connection"):
        check_server_accepts(f"http://127.0.0.1:{closed_port()}")
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        check_server_accepts(f"http://127.0.0.1:{listening.getsockname()[1]}")  # accepted: no error


def test_online_run_falls_back_to_offline_without_waiting_its_init_timeout(tmp_path, monkeypatch):
    """init_timeout is 10 minutes: had the run waited for it, this test would not finish."""
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{closed_port()}")
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    tracker = Tracker.start({"a": 1}, LoggerConfig(mode="online", init_timeout=600.0), tmp_path, background=True)
    tracker.log({"info/frames": 64, "losses/actor_loss": 0.5})
    tracker.finish()
    assert tracker.mode == "offline" and "refused the connection" in tracker.failure
    assert tracker.run_dir is not None and tracker.run_dir.name.startswith("offline-run-")


def test_secret_overrides_and_storage_reach_workers_outside_their_argv(tmp_path, monkeypatch):
    """What `workbench sweep` starts: no password on any command line, the environment carries them."""
    from workbench.sweep import cli as sweep_cli

    started = []

    class Done:
        returncode, stderr = 0, ""

        def wait(self):
            return 0

    def record(cmd, env=None, **kwargs):
        started.append((cmd, env))
        return Done()

    monkeypatch.setattr(sweep_cli.subprocess, "run", record)
    monkeypatch.setattr(sweep_cli.subprocess, "Popen", record)
    monkeypatch.setattr(sweep_cli, "load_study", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("no study")))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["workbench"])
    storage = f"sqlite:///{tmp_path}/s.db"
    (tmp_path / "url").write_text(storage + "\n")
    secret = "+extra.url=https://user:topsecret99@host/x"
    sweep_cli.sweep_main(["smoke", "--workers", "2", "--storage-file", str(tmp_path / "url"), secret,
                          "env.num_envs=64"])
    assert len(started) == 3  # the dry run and two workers
    for cmd, env in started:
        assert not any("topsecret99" in arg or storage in arg for arg in cmd), cmd
        assert "env.num_envs=64" in cmd
        assert json.loads(env["WORKBENCH_OVERRIDES"]) == [secret] and env["WORKBENCH_SWEEP_STORAGE"] == storage
