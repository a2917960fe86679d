"""No password on disk or on the console: a password in a config value, in the storage URL and in
WANDB_API_KEY, through a real training and a real 2-trial sweep; every file produced (binary
included: checkpoints, .wandb logs, the study) and the console output are searched for them."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from conftest import TINY
from pg_fixture import postgres_url  # noqa: F401  (the session fixture)
from sweep_fixture import OVERRIDES as TINY_SWEEP, sweep_env

pytestmark = pytest.mark.slow

CONFIG_PASSWORD = "topsecret99"
DB_PASSWORD = "dbsecret-7781"
API_KEY = "apikeysecret" + "7" * 28  # the 40 characters of a W&B key
SECRETS = (CONFIG_PASSWORD, DB_PASSWORD, API_KEY)
NOTE = f"+extra.url=https://user:{CONFIG_PASSWORD}@host/x"


def secret_env(root: Path) -> dict[str, str]:
    env = sweep_env(root)  # W&B offline in root, PYTHONPATH, one thread
    env["WANDB_API_KEY"] = API_KEY
    return env


def leaks(root: Path, console: str, given: tuple[Path, ...] = ()) -> list[str]:
    """Where a secret appears: the console, or any file under root except those the test gave."""
    found = [f"console: {s}" for s in SECRETS if s in console]
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink() and path not in given:
            content = path.read_bytes()
            found += [f"{path.relative_to(root)}: {s}" for s in SECRETS if s.encode() in content]
    return found


def run(cmd: list[str], root: Path) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "workbench.cli", *cmd], cwd=root, env=secret_env(root),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_a_training_writes_no_secret(tmp_path):
    done = run(["train", *TINY, NOTE, f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    assert leaks(tmp_path, done.stdout + done.stderr) == []
    # the value did travel, masked, into every saved config
    for saved in ("resolved_config.yaml", ".hydra/config.yaml", ".hydra/overrides.yaml", ".hydra/hydra.yaml"):
        assert "https://user:***@host/x" in (tmp_path / "run" / saved).read_text(), saved
    assert list((tmp_path / "run" / "wandb").glob("offline-run-*/run-*.wandb"))


def study_as_text(url: str, name: str) -> str:
    study = optuna.load_study(study_name=name, storage=url)
    parts = [study.user_attrs, study._storage.get_study_system_attrs(study._study_id)]
    for trial in study.get_trials(deepcopy=False):
        parts += [trial.params, trial.user_attrs, trial.system_attrs]
    return repr(parts)


def test_a_sweep_writes_no_secret(tmp_path, postgres_url):  # noqa: F811
    url = postgres_url.replace("postgres@", f"postgres:{DB_PASSWORD}@")  # trust auth ignores it
    (tmp_path / "storage.url").write_text(url + "\n")
    done = run(["sweep", "smoke", "--workers", "1", "--n-trials", "2", "--study-name", "secrets",
                "--storage-file", str(tmp_path / "storage.url"), NOTE, *TINY_SWEEP], tmp_path)
    console = done.stdout + done.stderr
    assert "best trial" in done.stdout
    found = leaks(tmp_path, console, given=(tmp_path / "storage.url",))
    assert found == [], "\n".join(found + [line for line in console.splitlines() if any(s in line for s in SECRETS)])
    stored = study_as_text(url, "secrets")
    assert not [s for s in SECRETS if s in stored], "a secret is in the study storage"
    assert "***@host/x" in stored  # the search space was recorded, masked
    trial_dirs = sorted((tmp_path / "multirun" / "secrets").glob("[0-9]*"))
    assert len(trial_dirs) == 2
    for trial_dir in trial_dirs:
        assert "***@host/x" in (trial_dir / ".hydra" / "overrides.yaml").read_text()
