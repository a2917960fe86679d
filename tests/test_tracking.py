"""Tracker -> .wandb file -> read_run round trips, failure fallbacks, secrets."""
from __future__ import annotations

import threading
import json
import math
import logging
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

wandb = pytest.importorskip("wandb")

from workbench.tracking import (  # noqa: E402
    LoggerConfig,
    NotAWandbFileError,
    Tracker,
    list_runs,
    read_run,
    runs_main,
    scrub_secrets,
)
from workbench.tracking.wandb_log import BLOCK_LEN, HEADER_LEN  # noqa: E402

PG_PASSWORD = "pg-S3cretPassw0rd"
PG_URL = f"postgresql://optuna:{PG_PASSWORD}@db.example.org:5432/studies"
API_KEY = "local-0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(autouse=True)
def wandb_env(tmp_path, monkeypatch):
    """Keep wandb's own state in tmp and off the network."""
    for name in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
        path = tmp_path / "wandb-home" / name.lower()
        path.mkdir(parents=True)
        monkeypatch.setenv(name, str(path))
    for name in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_ENTITY", "WANDB_PROJECT", "WANDB_RUN_ID", "WANDB_RESUME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")


def make_config():
    return {
        "seed": 3,
        "agent": {"e_clip": 0.2, "tau": 0.95, "model": {"actor": {"actor_logstd": -2.9}}, "layers": [64, 64]},
        "env": {"name": "pendulum", "num_envs": 4},
        "logger": {"mode": "offline", "group": "g1", "tags": ["a", "b"]},
    }


KEYS = [
    "actor/clip_frac",
    "actor/grad_norm_before_clip",
    "actor/grad_norm_after_clip",
    "critic/grad_norm_before_clip",
    "critic/value_clip_frac",
    "losses/actor_loss",
    "adv_norm/clamp_frac",
    "info/episode_reward",
    "grad_layers/actor/mu_model.0.weight",
]


def make_rows(n, seed=0):
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        row = {"info/frames": float(128 * (i + 1))}
        row.update({k: rng.uniform(-1e3, 1e3) for k in KEYS})
        row["actor/tiny"] = rng.random() * 1e-12
        if i % 3 == 2:  # evaluation only every third iteration
            row["eval/episode_reward"] = rng.uniform(-1500, 0)
        rows.append(row)
    return rows


def run_tracker(out, rows, logger=None, config=None, finish=True):
    logger = logger or LoggerConfig(group="g1", tags=["a", "b"], name="trial-7", notes="n")
    tracker = Tracker.start(config if config is not None else make_config(), logger, out)
    for row in rows:
        tracker.log(row)
    if finish:
        tracker.finish()
    return tracker


def assert_history_equals(history, rows):
    assert len(history) == len(rows)
    assert list(history["_step"]) == list(range(len(rows)))
    for i, row in enumerate(rows):
        for key, value in row.items():
            assert history[key].iloc[i] == value, (i, key)
        missing = set(history.columns) - set(row) - {"_step", "_runtime", "_timestamp"}
        assert history.loc[i, sorted(missing)].isna().all(), (i, missing)


def chunk_offsets(data):
    """(offset, length, type) of every chunk, walking the format independently."""
    out, pos = [], HEADER_LEN
    while pos + HEADER_LEN <= len(data):
        left = BLOCK_LEN - pos % BLOCK_LEN
        if left < HEADER_LEN:
            pos += left
            continue
        _, length, ctype = struct.unpack_from("<IHB", data, pos)
        if ctype == 0:
            break
        out.append((pos, length, ctype))
        pos += HEADER_LEN + length
    return out


def history_record_chunks(data):
    """Offsets of chunks that carry history records (FULL chunks only)."""
    from wandb.proto import wandb_internal_pb2 as pb

    found = []
    for pos, length, ctype in chunk_offsets(data):
        if ctype != 1:
            continue
        record = pb.Record()
        record.ParseFromString(data[pos + HEADER_LEN : pos + HEADER_LEN + length])
        if record.WhichOneof("record_type") == "history":
            found.append((pos, length))
    return found


def children_named(fragment):
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        name = text[text.find("(") + 1 : text.rfind(")")]
        ppid = int(text[text.rfind(")") + 2 :].split()[1])
        if ppid == os.getpid() and fragment in name:
            pids.append(int(stat.parent.name))
    return pids


# ---------------------------------------------------------------- round trip
def test_round_trip_every_value(tmp_path):
    rows = make_rows(25)
    out = tmp_path / "out"
    tracker = Tracker.start(make_config(), LoggerConfig(group="g1", tags=["a", "b"], name="trial-7", job_type="sweep-trial"), out)
    for row in rows:
        tracker.log(row)
    tracker.update_summary({"trial/number": 7})
    tracker.finish()

    assert tracker.mode == "offline" and tracker.failure is None
    assert tracker.run_dir.parent == out / "wandb" and tracker.run_dir.name.startswith("offline-run-")
    run = read_run(out)  # the Hydra output dir form
    assert run.run_id == tracker.run_id and run.run_dir == tracker.run_dir
    assert (run.group, run.job_type, run.name, run.project, run.tags) == ("g1", "sweep-trial", "trial-7", "workbench", ["a", "b"])
    assert run.config == make_config()
    assert run.state == "finished" and run.exit_code == 0 and not run.truncated
    assert_history_equals(run.history, rows)

    evals = [r["eval/episode_reward"] for r in rows if "eval/episode_reward" in r]
    assert run.summary["eval/episode_reward_best"] == max(evals)
    assert run.summary["eval/episode_reward"] == evals[-1]
    assert "eval/episode_reward_final" not in run.summary  # the last value has one key, its own
    assert run.summary["info/frames"] == rows[-1]["info/frames"]
    assert run.summary["trial/number"] == 7
    assert 0 < run.summary["wall_time_s"] < 600
    # The same run read via its directory and via its file.
    assert read_run(run.run_dir).run_id == read_run(run.path).run_id == run.run_id


def test_final_summary_writes_each_value_once_and_skips_a_last_nan(tmp_path):
    tracker = Tracker.start(make_config(), LoggerConfig(mode="disabled"), tmp_path / "out")
    for frames, train_return, eval_return in ((64.0, -5.0, -9.0), (128.0, -2.0, -4.0), (192.0, math.nan, -6.0)):
        tracker.log({"info/frames": frames, "info/episode_reward": train_return, "eval/episode_reward": eval_return})
    summary = tracker.final_summary()
    assert set(summary) == {"wall_time_s", "info/frames", "eval/episode_reward", "eval/episode_reward_best",
                            "info/episode_reward", "info/episode_reward_best"}
    assert (summary["eval/episode_reward"], summary["eval/episode_reward_best"]) == (-6.0, -4.0)
    assert (summary["info/episode_reward"], summary["info/episode_reward_best"]) == (-2.0, -2.0)  # the NaN skipped
    assert summary["info/frames"] == 192.0


def test_step_metric_defined_for_all_keys(tmp_path):
    from wandb.proto import wandb_internal_pb2 as pb
    from workbench.tracking.wandb_log import scan_log

    tracker = run_tracker(tmp_path / "out", make_rows(2))
    metrics = []
    for payload in scan_log(read_run(tracker.run_dir).path.read_bytes()).records:
        record = pb.Record()
        record.ParseFromString(payload)
        if record.WhichOneof("record_type") == "metric":
            metrics.append(record.metric)
    assert any(m.glob_name == "*" and m.step_metric == "info/frames" for m in metrics)


def test_matches_wandb_leet_inspect(tmp_path):
    rows = make_rows(12, seed=5)
    tracker = run_tracker(tmp_path / "out", rows)
    run = read_run(tracker.run_dir)
    wandb_cli = [sys.executable, "-c", "from wandb.cli.cli import cli; cli()"]
    proc = subprocess.run([*wandb_cli, "leet", "inspect", "--json", str(run.run_dir)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    history = [r["history"] for r in records if r["type"] == "history"]
    assert len(history) == len(run.history) == len(rows)
    for i, rec in enumerate(history):
        item = rec["item"]
        assert rec.get("step", {}).get("num", 0) == run.history["_step"].iloc[i]
        for key, value in rows[i].items():
            assert item[key] == run.history[key].iloc[i] == value, (i, key)
    run_record = next(r["run"] for r in records if r["type"] == "run")
    leet_config = {k: v for k, v in run_record["config"]["update"].items() if k != "_wandb"}
    assert leet_config == run.config
    assert (run_record["run_id"], run_record["run_group"]) == (run.run_id, run.group)

    proc = subprocess.run([*wandb_cli, "leet", "inspect", "--summary", "--json", str(run.path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["state"] == run.state == "finished"
    for key in ("eval/episode_reward_best", "info/frames", "actor/clip_frac", "wall_time_s"):
        assert summary["summary"][key] == run.summary[key], key


# ------------------------------------------------------ killed / corrupt runs
def _copy_run(tracker, tmp_path):
    src = read_run(tracker.run_dir).path
    dst = tmp_path / "copy" / "offline-run-x" / src.name
    dst.parent.mkdir(parents=True)
    shutil.copy(src, dst)
    return dst


def test_killed_run_cut_mid_record(tmp_path):
    rows = make_rows(20, seed=1)
    tracker = run_tracker(tmp_path / "out", rows)
    dst = _copy_run(tracker, tmp_path)
    data = dst.read_bytes()
    hist = history_record_chunks(data)
    pos, length = hist[10]  # cut inside the 11th history record
    dst.write_bytes(data[: pos + HEADER_LEN + length // 2])

    run = read_run(dst)
    assert run.truncated and run.state == "crashed"
    assert_history_equals(run.history, rows[:10])
    assert run.config == make_config() and run.group == "g1"


def test_killed_run_cut_between_records_is_not_truncated(tmp_path):
    rows = make_rows(8, seed=2)
    tracker = run_tracker(tmp_path / "out", rows)
    dst = _copy_run(tracker, tmp_path)
    data = dst.read_bytes()
    pos, _ = history_record_chunks(data)[5]
    dst.write_bytes(data[:pos])
    old = time.time() - 3600
    os.utime(dst, (old, old))
    run = read_run(dst)
    assert not run.truncated and run.state == "crashed" and run.exit_code is None
    assert_history_equals(run.history, rows[:5])


def test_corrupt_byte_stops_at_last_good_record(tmp_path):
    rows = make_rows(15, seed=3)
    tracker = run_tracker(tmp_path / "out", rows)
    dst = _copy_run(tracker, tmp_path)
    data = bytearray(dst.read_bytes())
    pos, length = history_record_chunks(bytes(data))[7]
    # Flip a digit inside the payload: still valid protobuf/JSON, so only the checksum can tell.
    start = pos + HEADER_LEN + length // 2
    digit = next(i for i in range(start, pos + HEADER_LEN + length) if chr(data[i]).isdigit() and data[i] != ord("9"))
    data[digit] += 1
    dst.write_bytes(bytes(data))

    run = read_run(dst)
    assert run.truncated and "checksum" in run.problem
    assert_history_equals(run.history, rows[:7])


def test_record_spanning_blocks(tmp_path):
    """Rows larger than a 32 KiB block are split into FIRST/MIDDLE/LAST chunks."""
    rows = []
    for i in range(4):
        row = {"info/frames": float(i)}
        row.update({f"grad_layers/actor/layer_{j:04d}.weight": float(i * 10000 + j) / 7 for j in range(3000)})
        rows.append(row)
    tracker = run_tracker(tmp_path / "out", rows)
    run = read_run(tracker.run_dir)
    assert {c[2] for c in chunk_offsets(run.path.read_bytes())} >= {2, 3, 4}
    assert not run.truncated
    assert_history_equals(run.history, rows)


def test_not_a_wandb_file(tmp_path):
    bogus = tmp_path / "run-abc.wandb"
    bogus.write_text("this is not a transaction log at all\n")
    with pytest.raises(NotAWandbFileError, match="run-abc.wandb") as info:
        read_run(bogus)
    assert isinstance(info.value, ValueError)
    tiny = tmp_path / "tiny.wandb"
    tiny.write_bytes(b":W&")
    with pytest.raises(NotAWandbFileError, match="tiny.wandb"):
        read_run(tiny)
    with pytest.raises(FileNotFoundError):
        read_run(tmp_path / "nothing-here")


# ------------------------------------------------------------------ fallback
def _warnings(caplog):
    return [r for r in caplog.records if r.name == "workbench.tracking" and r.levelno == logging.WARNING]


def test_fallback_when_online_init_fails(tmp_path, monkeypatch, caplog):
    real_init = wandb.init

    def init(*args, **kwargs):
        if kwargs["settings"].mode == "online":
            raise wandb.errors.CommError("bad entity / no network")
        return real_init(*args, **kwargs)

    monkeypatch.setattr(wandb, "init", init)
    rows = make_rows(6, seed=4)
    with caplog.at_level(logging.WARNING, logger="workbench.tracking"):
        tracker = run_tracker(tmp_path / "out", rows, logger=LoggerConfig(mode="online", entity="nobody"))
    assert len(_warnings(caplog)) == 1
    assert "online" in _warnings(caplog)[0].getMessage()
    assert tracker.mode == "offline" and tracker.failure
    run = read_run(tmp_path / "out")
    assert run.state == "finished"
    assert_history_equals(run.history, rows)


def test_fallback_when_log_raises_midway(tmp_path, caplog):
    rows = make_rows(10, seed=6)
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING, logger="workbench.tracking"):
        tracker = Tracker.start(make_config(), LoggerConfig(group="g1"), out)
        first_dir = tracker.run_dir
        for row in rows[:4]:
            tracker.log(row)

        def broken_log(*args, **kwargs):
            raise RuntimeError("wandb exploded")

        tracker._run.log = broken_log
        for row in rows[4:]:
            tracker.log(row)  # must not raise
        tracker.update_summary({"trial/number": 3})
        tracker.finish()
    assert len(_warnings(caplog)) == 1
    assert tracker.run_dir != first_dir and (first_dir / "workbench-superseded.json").exists()
    run = read_run(out)  # picks the fallback run, not the superseded one
    assert run.run_id == tracker.run_id and run.group == "g1" and run.config == make_config()
    assert run.summary["trial/number"] == 3 and run.state == "finished"
    assert_history_equals(run.history, rows)
    assert list(list_runs(out)["id"]) == [tracker.run_id]
    assert len(list_runs(out, include_superseded=True)) == 2


def test_fallback_when_service_process_killed(tmp_path, caplog):
    rows = make_rows(10, seed=7)
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING, logger="workbench.tracking"):
        tracker = Tracker.start(make_config(), LoggerConfig(), out)
        for row in rows[:5]:
            tracker.log(row)
        services = children_named("wandb-core")
        assert services, "expected a wandb-core child process"
        for pid in services:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        for row in rows[5:]:
            tracker.log(row)
        tracker.finish()
    assert len(_warnings(caplog)) == 1
    run = read_run(out)
    assert run.state == "finished"
    assert_history_equals(run.history, rows)


# ------------------------------------------------------------------- secrets
SECRET_SCRIPT = """
import json, sys
from workbench.tracking import LoggerConfig, Tracker
config = json.loads(sys.argv[2])
tracker = Tracker.start(config, LoggerConfig(), sys.argv[1])
# Training code that prints its config must not leak it into output.log.
print("config: storage=" + config["sweep"]["storage"] + " key=" + sys.argv[3], flush=True)
tracker.log({"info/frames": 1.0})
tracker.finish()
"""


def test_secrets_never_written(tmp_path, monkeypatch):
    # A subprocess: wandb captures the real process stdout, which pytest replaces.
    monkeypatch.setenv("WANDB_API_KEY", API_KEY)
    monkeypatch.setenv("MY_SERVICE_TOKEN", "tok-abcdefgh12345")
    config = make_config()
    config["sweep"] = {"storage": PG_URL, "api_key": "hunter22222", "study_name": "s1"}
    config["notes"] = [f"storage was {PG_URL}", "token tok-abcdefgh12345 here"]
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run(
        [sys.executable, "-c", SECRET_SCRIPT, str(out), json.dumps(config), API_KEY],
        capture_output=True, text=True, timeout=120, env=env,
    )
    assert proc.returncode == 0, proc.stderr

    run = read_run(out)
    assert run.config["sweep"] == {
        "storage": "postgresql://optuna:***@db.example.org:5432/studies",
        "api_key": "***",
        "study_name": "s1",
    }
    assert run.config["notes"] == ["storage was postgresql://optuna:***@db.example.org:5432/studies", "token *** here"]
    # The console was captured (so the byte checks below mean something) and scrubbed.
    assert "config: storage=postgresql://optuna:***@db.example.org:5432/studies key=***" in run.console
    output_log = run.run_dir / "files" / "output.log"
    deadline = time.time() + 30  # wandb-core writes output.log on its own schedule
    while not output_log.exists() and time.time() < deadline:
        time.sleep(0.05)
    assert "storage=postgresql://optuna:***@db.example.org" in output_log.read_text()
    files = [p for p in out.rglob("*") if p.is_file()]
    assert run.path in files and output_log in files
    for secret in (PG_PASSWORD, API_KEY, "hunter22222", "tok-abcdefgh12345"):
        for path in files:
            assert secret.encode() not in path.read_bytes(), (secret, path)


def test_scrub_secrets_recurses(monkeypatch):
    monkeypatch.setenv("DB_PASSWORD", "very-secret-pw")
    obj = {
        "a": [{"url": "mysql://root:pw1@h/db"}, ("x", "sqlite:///plain.db")],
        "password": "short",
        "n": 3,
        "s": "pass very-secret-pw along",
        "ok": "http://host:8080/path@x",
    }
    assert scrub_secrets(obj) == {
        "a": [{"url": "mysql://root:***@h/db"}, ("x", "sqlite:///plain.db")],
        "password": "***",
        "n": 3,
        "s": "pass *** along",
        "ok": "http://host:8080/path@x",
    }
    assert obj["password"] == "short"  # input untouched


# -------------------------------------------------------------------- modes
def test_wandb_mode_env_overrides_and_disabled_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    tracker = run_tracker(tmp_path / "out", make_rows(3), logger=LoggerConfig(mode="offline"))
    assert tracker.mode == "disabled" and tracker.run_id is None and tracker.run_dir is None
    assert not (tmp_path / "out" / "wandb").exists()
    monkeypatch.setenv("WANDB_MODE", "bogus")
    with pytest.raises(ValueError, match="WANDB_MODE"):
        Tracker.start({}, LoggerConfig(), tmp_path / "out2")


# ---------------------------------------------------------------------- CLI
def test_runs_cli_table(tmp_path, capsys):
    rows_a = make_rows(6, seed=8)
    rows_b = [{k: v for k, v in r.items() if k != "eval/episode_reward"} for r in make_rows(4, seed=9)]
    a = run_tracker(tmp_path / "outputs" / "a", rows_a, logger=LoggerConfig(group="study-1"))
    b = run_tracker(tmp_path / "multirun" / "b" / "0", rows_b, logger=LoggerConfig(group="study-2"))

    table = list_runs([tmp_path / "outputs", tmp_path / "multirun"]).set_index("id")
    assert set(table.index) == {a.run_id, b.run_id}
    last_eval = [r["eval/episode_reward"] for r in rows_a if "eval/episode_reward" in r][-1]
    assert table.loc[a.run_id, "final_return"] == last_eval
    assert table.loc[b.run_id, "final_return"] == rows_b[-1]["info/episode_reward"]
    assert table.loc[a.run_id, "frames"] == rows_a[-1]["info/frames"]
    assert table.loc[b.run_id, "group"] == "study-2" and table.loc[b.run_id, "state"] == "finished"

    monkeypatch_cwd = os.getcwd()
    try:
        os.chdir(tmp_path)
        assert runs_main([]) == 0
    finally:
        os.chdir(monkeypatch_cwd)
    out = capsys.readouterr().out
    header, *lines = out.strip().splitlines()
    assert header.split() == ["id", "group", "state", "frames", "final_return", "path"]
    assert any(line.startswith(a.run_id) and "study-1" in line and f"outputs/a/wandb/{a.run_dir.name}" in line for line in lines)
    assert len(lines) == 2


def test_accepts_omegaconf_config(tmp_path):
    from omegaconf import OmegaConf

    cfg = OmegaConf.create({"agent": {"e_clip": 0.2, "lr": "${agent.e_clip}"}, "storage": PG_URL})
    tracker = run_tracker(tmp_path / "out", make_rows(2), config=cfg)
    assert read_run(tracker.run_dir).config == {
        "agent": {"e_clip": 0.2, "lr": 0.2},
        "storage": "postgresql://optuna:***@db.example.org:5432/studies",
    }


# ------------------------------------------------------ background start
def _slow_init(monkeypatch, started: threading.Event, fail_online: bool = False):
    real_init = wandb.init

    def init(*args, **kwargs):
        started.wait(timeout=30)  # hold the start until the test has logged rows
        if fail_online and kwargs["settings"].mode == "online":
            raise wandb.errors.CommError("no network")
        return real_init(*args, **kwargs)

    monkeypatch.setattr(wandb, "init", init)


def test_background_start_keeps_rows_logged_while_starting(tmp_path, monkeypatch):
    release = threading.Event()
    _slow_init(monkeypatch, release)
    rows = make_rows(8, seed=11)
    tracker = Tracker.start(make_config(), LoggerConfig(group="bg"), tmp_path / "out", background=True)
    for row in rows[:5]:
        tracker.log(row)
    assert not tracker.started and tracker.run_id is None  # still starting: the rows wait in memory
    release.set()
    for row in rows[5:]:
        tracker.log(row)
    tracker.finish()
    assert tracker.started and tracker.run_id
    run = read_run(tmp_path / "out")
    assert run.state == "finished" and run.group == "bg" and run.run_id == tracker.run_id
    assert_history_equals(run.history, rows)


def test_background_start_failure_falls_back_offline(tmp_path, monkeypatch, caplog):
    release = threading.Event()
    _slow_init(monkeypatch, release, fail_online=True)
    rows = make_rows(6, seed=12)
    with caplog.at_level(logging.WARNING, logger="workbench.tracking"):
        tracker = Tracker.start(make_config(), LoggerConfig(mode="online", entity="nobody"), tmp_path / "out",
                                background=True)
        for row in rows[:3]:
            tracker.log(row)
        release.set()
        for row in rows[3:]:
            tracker.log(row)
        tracker.finish()
    assert len(_warnings(caplog)) == 1 and tracker.mode == "offline"
    assert_history_equals(read_run(tmp_path / "out").history, rows)


@pytest.mark.parametrize("mode, service", [("offline", True), ("disabled", False)])
def test_start_service_starts_wandb_core_unless_disabled(mode: str, service: bool):
    """A sweep worker's warm-up (workbench.train.warm_up) starts this process's wandb-core."""
    code = (
        "import os, sys\n"
        "from workbench.tracking import start_service\n"
        f"start_service({mode!r})\n"
        "children = open(f'/proc/{os.getpid()}/task/{os.getpid()}/children').read().split()\n"
        "cmds = [open(f'/proc/{c}/cmdline', 'rb').read() for c in children]\n"
        "print(any(b'wandb-core' in c for c in cmds), 'wandb' in sys.modules)\n"
    )
    # WANDB_SERVICE: a process that already ran W&B (this pytest, after earlier tests) hands its
    # service to its children, which then start none of their own
    env = {k: v for k, v in os.environ.items() if k not in ("WANDB_MODE", "WANDB_SERVICE")}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == [str(service), str(service)]
