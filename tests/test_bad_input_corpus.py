"""The bad-input corpus: every refusal is exit 2, one line on stderr naming the bad value and
what is allowed, and nothing is written (no output dir, no checkpoint, no W&B run, no study).

Cases run the ``workbench`` command in-process (``workbench.cli.main`` with argv), so the whole
corpus takes seconds; only the sweep's own dry run needs a subprocess (marked slow).
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest
import torch

from conftest import REPO, workbench_env
from workbench.cli import main


def closed_port() -> int:
    """A localhost port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Case:
    argv: list[str]  # after `workbench`; {tmp} is the test's scratch directory, {port} a closed port
    expected: list[str]  # substrings of the one error line: the bad value and what is allowed
    prepare: Callable[[Path], None] | None = None  # makes the bad input file(s) under {tmp}
    env: dict[str, str] = field(default_factory=dict)


def file_with(content: bytes, name: str) -> Callable[[Path], None]:
    return lambda tmp: (tmp / name).write_bytes(content)


def torch_file(obj, name: str, truncate: int | None = None) -> Callable[[Path], None]:
    def make(tmp: Path) -> None:
        torch.save(obj, tmp / name)
        if truncate is not None:
            (tmp / name).write_bytes((tmp / name).read_bytes()[:truncate])
    return make


class Planted:
    """A pickle that would create a file if it were ever unpickled unsafely."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def malicious_checkpoint(tmp: Path) -> None:
    torch.save({"model": Planted(str(tmp / "pwned"))}, tmp / "evil.ckpt")


def zip_file(tmp: Path) -> None:
    with zipfile.ZipFile(tmp / "archive.ckpt", "w") as z:
        z.writestr("data.txt", "not a checkpoint")


def directory(name: str) -> Callable[[Path], None]:
    return lambda tmp: (tmp / name).mkdir()


def sweep_file(text: bytes | str, name: str = "broken") -> Callable[[Path], None]:
    def make(tmp: Path) -> None:
        (tmp / "sweep").mkdir(exist_ok=True)
        path = tmp / "sweep" / f"{name}.yaml"
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return make


RUN = "hydra.run.dir={tmp}/run"
MULTIRUN = "hydra.sweep.dir={tmp}/multirun"
SEARCH = "hydra.searchpath=[file://{tmp}]"
SMOKE = ["train", "-m", "+sweep=smoke", MULTIRUN]


def train(*overrides: str) -> list[str]:
    # W&B offline (a run would leave files to find) and one iteration, should a case ever be accepted
    return ["train", RUN, "logger.mode=offline", "agent.training_max_steps=32768", *overrides]


TRAINING = {
    "e_clip negative": Case(train("agent.e_clip=-0.1"), ["agent.e_clip=-0.1", "must be > 0"]),
    "e_clip zero": Case(train("agent.e_clip=0"), ["agent.e_clip=0.0", "must be > 0"]),
    "tau above 1": Case(train("agent.tau=1.5"), ["agent.tau=1.5", "must be in [0, 1]"]),
    "gamma negative": Case(train("agent.gamma=-0.01"), ["agent.gamma=-0.01", "must be in [0, 1]"]),
    "min_std zero": Case(train("agent.advantage_normalization.min_std=0"), ["min_std=0.0", "must be > 0"]),
    "ema_alpha above 1": Case(train("agent.advantage_normalization.ema_alpha=1.5"), ["ema_alpha=1.5", "(0, 1]"]),
    "batch does not divide": Case(train("agent.batch_size=1000"), ["agent.batch_size=1000", "must divide"]),
    "max steps zero": Case(train("agent.training_max_steps=0"), ["training_max_steps=0", ">= 1"]),
    "mini epochs zero": Case(train("agent.num_mini_epochs=0"), ["num_mini_epochs=0", ">= 1"]),
    "lr zero": Case(train("agent.model.actor_optimizer.lr=0"), ["actor_optimizer.lr=0.0", "must be > 0"]),
    "muon optimizer": Case(train("agent.model.actor_optimizer._target_=protomotions.agents.optimizer.muon.MuonWithAuxAdam"),
                           ["actor_optimizer._target_='protomotions.agents.optimizer.muon.MuonWithAuxAdam'",
                            "torch.optim.Adam, torch.optim.AdamW"]),
    "grad clip negative": Case(train("agent.gradient_clip_val=-1"), ["gradient_clip_val=-1.0", ">= 0"]),
    "eval envs zero": Case(train("agent.evaluator.num_envs=0"), ["evaluator.num_envs=0", ">= 1"]),
    "torch threads zero": Case(train("torch_threads=0"), ["torch_threads=0", ">= 1"]),
    "device tpu": Case(train("device=tpu"), ["device='tpu'", "cpu, cuda, auto"]),
    "logger mode": Case(train("logger.mode=sometimes"), ["logger.mode='sometimes'", "offline, online, disabled"]),
    "init timeout": Case(train("logger.init_timeout=0"), ["logger.init_timeout=0.0", "> 0"]),
    "unknown env": Case(train("env=nope"), ["env/nope", "Available options", "cartpole"]),
    "unknown agent key": Case(train("agent.foo=1"), ["agent.foo", "Key 'foo' not in 'PPOAgentConfig'"]),
    "added agent key": Case(train("+agent.no_such_key=1"), ["agent.no_such_key=1", "known keys", "e_clip"]),
    "agent key typo": Case(train("+agent.e_clpi=0.1"), ["agent.e_clpi=0.1", "did you mean agent.e_clip?"]),
    "sweeper key typo": Case([*SMOKE, "+hydra.sweeper.n_trails=99"],
                             ["hydra.sweeper.n_trails=99", "did you mean hydra.sweeper.n_trials?"]),
    "sweeper directions typo": Case([*SMOKE, "+hydra.sweeper.directions=[maximize]"],
                                    ["hydra.sweeper.directions", "did you mean hydra.sweeper.direction?"]),
    "network target": Case(train("agent.model.critic.models.0._target_=protomotions.agents.common.transformer.Transformer"),
                           ["agent.model.critic.models.0._target_='protomotions.agents.common.transformer.Transformer'",
                            "protomotions.agents.common.mlp.MLPWithConcat"]),
    "network activation": Case(train("agent.model.critic.models.0.layers.0.activation=swish"),
                               ["agent.model.critic.models.0.layers.0.activation='swish'", "relu", "sigmoid"]),
    "network key typo": Case(train("+agent.model.actor.mu_model.models.0.normalise_obs=true"),
                             ["agent.model.actor.mu_model.models.0.normalise_obs=True", "not a key of MLPWithConcatConfig",
                              "normalize_obs"]),
    "agent target": Case(train("agent._target_=protomotions.agents.amp.agent.AMP"),
                         ["agent._target_='protomotions.agents.amp.agent.AMP'", "protomotions.agents.ppo.agent.PPO"]),
    "added actor key": Case(train("+agent.model.actor.zzz=1"), ["agent.model.actor.zzz=1", "PPOActorConfig"]),
    "added root key": Case(train("+foo=1"), ["foo=1", "not a key of WorkbenchConfig", "+extra."]),
    "e_clip not a number": Case(train("agent.e_clip=abc"), ["'abc'", "Float"]),
    "num_steps not an int": Case(train("agent.num_steps=2.5"), ["agent.num_steps=2.5", "Integer"]),
    "seed not an int": Case(train("seed=abc"), ["seed=abc", "Integer"]),
    "bool not a bool": Case(train("load_training_state=maybe"), ["'maybe'", "not a valid bool"]),
    "unknown env key": Case(train("env.bogus_knob=3"), ["env.bogus_knob", "not in struct"]),
    "added env key": Case(train("+env.bogus_knob=3"), ["'bogus_knob'", "allowed keys", "max_episode_length"]),
    "num_envs text": Case(train("env.num_envs=abc"), ["env.num_envs='abc'", "an integer"]),
    "num_envs fraction": Case(train("env.num_envs=2.5"), ["env.num_envs=2.5", "an integer"]),
    "num_envs zero": Case(train("env.num_envs=0"), ["env.num_envs=0", ">= 1"]),
    "episode length text": Case(train("env.max_episode_length=abc"), ["env.max_episode_length='abc'", "an integer"]),
    "episode length list": Case(train("env.max_episode_length=[1]"), ["env.max_episode_length=[1]", "an integer"]),
    "episode length zero": Case(train("env.max_episode_length=0"), ["env.max_episode_length=0", ">= 1"]),
    "dt text": Case(train("+env.dt=abc"), ["env.dt='abc'", "a number"]),
    "dt negative": Case(train("+env.dt=-0.05"), ["env.dt=-0.05", "must be > 0"]),
    "dt zero": Case(train("+env.dt=0"), ["env.dt=0", "must be > 0"]),
    "cartpole substeps": Case(train("env=cartpole", "+env.substeps=0"), ["env.substeps=0", ">= 1"]),
    "cartpole noise text": Case(train("env=cartpole", "+env.reset_noise=abc"), ["env.reset_noise='abc'", "a number"]),
    "env seed set": Case(train("+env.seed=3"), ["'seed'", "set by the agent"]),
    "output dir under a file": Case(["train", "hydra.run.dir={tmp}/afile/run"], ["{tmp}/afile/run", "Not a directory"],
                                    prepare=file_with(b"x", "afile")),
    "overrides env not json": Case(train(), ["WORKBENCH_OVERRIDES", "JSON list"], env={"WORKBENCH_OVERRIDES": "[oops"}),
}

SAFE_WAY = "pass a .ckpt written by workbench train"
CHECKPOINTS = {
    "missing": Case(train("checkpoint={tmp}/none.ckpt"), ["{tmp}/none.ckpt", "does not exist"]),
    "random bytes": Case(train("checkpoint={tmp}/random.ckpt"), ["{tmp}/random.ckpt", "not a workbench checkpoint",
                                                                  SAFE_WAY], prepare=file_with(os.urandom(4096), "random.ckpt")),
    "empty file": Case(train("checkpoint={tmp}/empty.ckpt"), ["empty.ckpt", "not a workbench checkpoint", SAFE_WAY],
                       prepare=file_with(b"", "empty.ckpt")),
    "text file": Case(train("checkpoint={tmp}/notes.txt"), ["notes.txt", "not a workbench checkpoint", SAFE_WAY],
                      prepare=file_with(b"hello\n", "notes.txt")),
    "malicious pickle": Case(train("checkpoint={tmp}/evil.ckpt"), ["evil.ckpt", "objects other than tensors", SAFE_WAY],
                             prepare=malicious_checkpoint),
    "zip not torch": Case(train("checkpoint={tmp}/archive.ckpt"), ["archive.ckpt", "not a workbench checkpoint"],
                          prepare=zip_file),
    "no model entry": Case(train("checkpoint={tmp}/other.ckpt"), ["other.ckpt", "no 'model' entry", SAFE_WAY],
                           prepare=torch_file({"weights": torch.zeros(2)}, "other.ckpt")),
    "truncated": Case(train("checkpoint={tmp}/cut.ckpt"), ["cut.ckpt", "not a workbench checkpoint"],
                      prepare=torch_file({"model": {"w": torch.zeros(64)}}, "cut.ckpt", truncate=200)),
    "other model": Case(train("checkpoint={tmp}/small.ckpt"), ["small.ckpt", "does not match the configured model"],
                        prepare=torch_file({"model": {"w": torch.zeros(2)}}, "small.ckpt")),
    "a directory": Case(train("checkpoint={tmp}/ckdir"), ["{tmp}/ckdir", "is a directory", SAFE_WAY],
                        prepare=directory("ckdir")),
}

OPTIONS = "--workers, --n-trials, --population, --storage"
SWEEP_ARGUMENTS = {
    "workers zero": Case(["sweep", "smoke", "--workers", "0"], ["--workers=0", "must be >= 1"]),
    "workers text": Case(["sweep", "smoke", "--workers", "abc"], ["'abc'", "invalid int value"]),
    "n-trials zero": Case(["sweep", "smoke", "--n-trials", "0"], ["--n-trials=0", "must be >= 1"]),
    "n-trials text": Case(["sweep", "smoke", "--n-trials", "x"], ["'x'", "invalid int value"]),
    "unknown flag": Case(["sweep", "smoke", "--bogus"], ["'--bogus'", OPTIONS]),
    "unknown flag with value": Case(["sweep", "smoke", "--bogus=1"], ["'--bogus'", OPTIONS]),
    "single dash": Case(["sweep", "smoke", "-x"], ["'-x'", OPTIONS]),
    "stray word": Case(["sweep", "smoke", "foo"], ["'foo'", "key=value"]),
    "no sweep name": Case(["sweep"], ["required: name"]),
    "unknown sweep": Case(["sweep", "nosuch"], ["'nosuch'", "available: halfcheetah, ppo_knobs, smoke"]),
    "storage twice": Case(["sweep", "smoke", "--storage", "a.journal", "--storage-file", "{tmp}/url"],
                          ["--storage or --storage-file, not both"], prepare=file_with(b"b.journal", "url")),
    "storage file missing": Case(["sweep", "smoke", "--storage-file", "{tmp}/nourl"],
                                 ["{tmp}/nourl", "storage URL on its first line"]),
    "storage file empty": Case(["sweep", "smoke", "--storage-file", "{tmp}/url"], ["{tmp}/url", "is empty"],
                               prepare=file_with(b"\n", "url")),
}

STORAGE_FORMS = "sqlite:///PATH or postgresql+psycopg://"
STORAGES = {
    "unknown scheme": Case(["sweep", "smoke", "--storage", "foo://x"], ["'foo://x'", "unknown scheme 'foo'", STORAGE_FORMS]),
    "unknown scheme from env": Case(["sweep", "smoke"], ["unknown scheme 'bar'"],
                                    env={"WORKBENCH_SWEEP_STORAGE": "bar://y"}),
    "directory": Case(["sweep", "smoke", "--storage", "{tmp}/db"], ["{tmp}/db is a directory", "name a file inside it"],
                      prepare=directory("db")),
    "journal under a file": Case(["sweep", "smoke", "--storage", "{tmp}/afile/s.journal"],
                                 ["{tmp}/afile/s.journal is not writable", "is a file, not a directory"],
                                 prepare=file_with(b"x", "afile")),
    "sqlite under a file": Case(["sweep", "smoke", "--storage", "sqlite:///{tmp}/afile/s.db"],
                                ["{tmp}/afile/s.db is not writable", "is a file, not a directory"],
                                prepare=file_with(b"x", "afile")),
    "sqlite a directory": Case(["sweep", "smoke", "--storage", "sqlite:///{tmp}/db"], ["{tmp}/db is a directory"],
                               prepare=directory("db")),
    "postgres down": Case(["sweep", "smoke", "--storage", "postgresql+psycopg://u:pw@127.0.0.1:{port}/db"],
                          ["not reachable at 127.0.0.1:{port}", "postgresql+psycopg://u:***@"]),
    "mysql down": Case(["sweep", "smoke", "--storage", "mysql://u@127.0.0.1:{port}/db"], ["not reachable at 127.0.0.1:{port}"]),
    "postgres down from a file": Case(["sweep", "smoke", "--storage-file", "{tmp}/url"], ["not reachable at 127.0.0.1"],
                                      prepare=lambda tmp: (tmp / "url").write_text(
                                          f"postgresql+psycopg://u:pw@127.0.0.1:{closed_port()}/db\n")),
    "sweeper storage unknown scheme": Case([*SMOKE, "hydra.sweeper.storage=foo://x"], ["'foo://x'", "unknown scheme"]),
    "sweeper storage directory": Case([*SMOKE, "hydra.sweeper.storage={tmp}/db"], ["is a directory"],
                                      prepare=directory("db")),
}

SWEEP_FILES = {
    "yaml syntax": Case(["sweep", "broken", SEARCH], ["broken.yaml", "line 4", "YAML syntax error"],
                        prepare=sweep_file("hydra:\n  sweeper:\n    params: {agent.e_clip: [\n")),
    "yaml tab": Case(["sweep", "broken", SEARCH], ["broken.yaml", "line 2", "YAML syntax error"],
                     prepare=sweep_file("hydra:\n\tsweeper: {}\n")),
    "yaml list": Case(["sweep", "broken", SEARCH], ["broken.yaml", "top level is a list", "YAML mapping"],
                      prepare=sweep_file("- a\n- b\n")),
    "binary": Case(["sweep", "broken", SEARCH], ["broken.yaml", "not a YAML file"],
                   prepare=sweep_file(b"\xff\xfe\x00garbage\x80")),
    "yaml syntax via train -m": Case(["train", "-m", "+sweep=broken", SEARCH, MULTIRUN], ["broken.yaml", "line 2", "expected ','"],
                                     prepare=sweep_file("a: [1, 2\n")),
    "interval reversed": Case([*SMOKE, "agent.tau=interval(0.99,0.9)"], ["agent.tau", "low must be < high"]),
    "interval malformed": Case([*SMOKE, "agent.tau=interval(0.9"], ["'interval(0.9'", "override_grammar"]),
    "log scale from zero": Case([*SMOKE, "agent.e_clip=tag(log,interval(0,0.3))"], ["agent.e_clip", "log"]),
    "misspelled key": Case([*SMOKE, "agent.e_clipp=interval(0.1,0.2)"], ["agent.e_clipp", "did you mean agent.e_clip"]),
    "n_trials zero": Case([*SMOKE, "hydra.sweeper.n_trials=0"], ["n_trials must be >= 1, got 0"]),
    "direction": Case([*SMOKE, "hydra.sweeper.direction=up"], ["direction must be maximize or minimize", "'up'"]),
    "unknown pruner": Case([*SMOKE, "hydra.sweeper.pruner._target_=optuna.pruners.Nope"],
                           ["optuna.pruners.Nope", "cannot build"]),
    "extreme value refused": Case([*SMOKE, "agent.e_clip=interval(-0.2,0.3)"], ["agent.e_clip=-0.2", "must be > 0"]),
}

RUN_FILES = {
    "text file": Case(["runs", "{tmp}/notwandb.txt"], ["notwandb.txt", "not a directory or a .wandb file"],
                      prepare=file_with(b"hello", "notwandb.txt")),
    "garbage .wandb": Case(["runs", "{tmp}/x.wandb"], ["x.wandb", "not a readable W&B run file"],
                           prepare=file_with(b"garbage" * 10, "x.wandb")),
    "empty .wandb": Case(["runs", "{tmp}/e.wandb"], ["e.wandb", "not a readable W&B run file"],
                         prepare=file_with(b"", "e.wandb")),
    "missing dir": Case(["runs", "{tmp}/nodir"], ["{tmp}/nodir", "no such directory"]),
    "unknown flag": Case(["runs", "--bogus"], ["--bogus", "workbench runs --help"]),
}

REPORTS = {
    "no study name": Case(["report"], ["required: study"]),
    "no storage": Case(["report", "nostudy"], ["nostudy.journal", "no study storage"]),
    "unknown scheme": Case(["report", "s", "--storage", "foo://x"], ["unknown scheme 'foo'", STORAGE_FORMS]),
    "postgres down": Case(["report", "s", "--storage", "postgresql+psycopg://u:pw@127.0.0.1:{port}/db"],
                          ["not reachable at 127.0.0.1:{port}"]),
    "wandb-report choice": Case(["report", "s", "--wandb-report", "maybe"], ["'maybe'", "'auto', 'always', 'never'"]),
    "unknown flag": Case(["report", "s", "--bogus"], ["--bogus"]),
    "directory storage": Case(["report", "s", "--storage", "{tmp}/db"], ["{tmp}/db"], prepare=directory("db")),
    "unknown command": Case(["trian"], ["unknown command 'trian'", "train, sweep, reevaluate, runs, report"]),
}

CORPUS = {f"{group}: {name}": case for group, cases in [
    ("train", TRAINING), ("checkpoint", CHECKPOINTS), ("sweep args", SWEEP_ARGUMENTS), ("storage", STORAGES),
    ("sweep file", SWEEP_FILES), ("runs", RUN_FILES), ("report", REPORTS)] for name, case in cases.items()}


def written(root: Path) -> set[Path]:
    return {p.relative_to(root) for p in root.rglob("*")}


def wandb_runs(*roots: Path) -> list[Path]:
    return [p for root in roots if root.exists() for p in root.rglob("*run-*") if p.is_dir()]


def test_the_corpus_is_large_enough():
    assert len(CORPUS) >= 60


@pytest.mark.parametrize("case", list(CORPUS.values()), ids=list(CORPUS))
def test_bad_input_is_refused_in_one_line_and_nothing_is_written(case: Case, tmp_path, monkeypatch, capsys):
    port = closed_port()
    fill = lambda text: text.replace("{tmp}", str(tmp_path)).replace("{port}", str(port))  # noqa: E731
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["workbench"])
    monkeypatch.delenv("WORKBENCH_SWEEP_STORAGE", raising=False)
    for key, value in case.env.items():
        monkeypatch.setenv(key, value)
    if case.prepare:
        case.prepare(tmp_path)
    before = written(tmp_path)

    try:
        code = main([fill(arg) for arg in case.argv])
    except SystemExit as done:
        code = done.code
    err = capsys.readouterr().err

    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("workbench") and ": error: " in lines[0], err
    for text in case.expected:
        assert fill(text) in lines[0], lines[0]
    assert "weights_only" not in lines[0] and "Traceback" not in err
    assert written(tmp_path) == before, f"left behind: {sorted(written(tmp_path) - before)}"
    assert not wandb_runs(tmp_path, Path(os.environ["WANDB_DIR"]))


@pytest.mark.slow
@pytest.mark.parametrize("argv, expected", [
    (["smoke", "agent.tau=interval(0.99,0.9)"], "agent.tau: low must be < high"),
    (["smoke", "hydra.sweeper.direction=up"], "direction must be maximize or minimize"),
])
def test_the_sweep_command_says_its_dry_run_refusal_in_one_line(tmp_path, argv, expected):
    """``workbench sweep`` validates in a worker-shaped subprocess; its refusal is still one line."""
    proc = subprocess.run([sys.executable, "-m", "workbench.cli", "sweep", *argv], cwd=tmp_path,
                          env={**workbench_env(), "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
                          timeout=180)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert expected in lines[0] and "no trial started" in lines[0]
    assert not list(tmp_path.iterdir()), "a refused sweep left files (a study, trial dirs)"
