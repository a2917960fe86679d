"""The composed configs a config refactoring must leave as they are, written as text.

``tests/test_config_snapshots.py`` composes each case below and compares it, character by
character, with ``tests/data/composed/<case>.yaml``, written from the configs before the
``conf/network/`` and ``conf/search_space/`` groups were introduced. A change meant to change
a composed config rewrites the snapshots (``python tests/composed_configs.py``); the diff then
shows exactly what it changed. The text is ``--cfg job`` of the case (interpolations left
unresolved, so a value that turned into an interpolation shows too), followed, for a sweep, by
the ``hydra.sweeper`` node it composes.
"""
from __future__ import annotations

import sys
from pathlib import Path

ENVS = ("pendulum", "cartpole", "gym_pendulum", "halfcheetah", "hopper", "ant", "walker2d")
SWEEPS = ("ppo_knobs", "halfcheetah", "smoke")
CASES: dict[str, list[str]] = {
    **{f"env-{env}": [f"env={env}"] for env in ENVS},
    **{f"sweep-{sweep}": [f"+sweep={sweep}"] for sweep in SWEEPS},
}
SNAPSHOTS = Path(__file__).resolve().parent / "data" / "composed"


def composed_text(conf_dir: str, overrides: list[str]) -> str:
    """The job config as ``workbench train --cfg job`` prints it; a sweep's ``hydra.sweeper`` after it."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf, open_dict

    from workbench.config import register_configs

    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=conf_dir, version_base=None):
        cfg = compose(config_name="config", overrides=overrides, return_hydra_config=True)
    sweeper = cfg.hydra.sweeper if any(o.startswith("+sweep=") for o in overrides) else None
    with open_dict(cfg):
        del cfg["hydra"]
    text = OmegaConf.to_yaml(cfg)
    if sweeper is not None:
        text += "# hydra.sweeper\n" + OmegaConf.to_yaml(sweeper)
    return text


def write_snapshots(conf_dir: str) -> None:
    SNAPSHOTS.mkdir(parents=True, exist_ok=True)
    for name, overrides in CASES.items():
        (SNAPSHOTS / f"{name}.yaml").write_text(composed_text(conf_dir, overrides))


if __name__ == "__main__":
    repo = Path(__file__).resolve().parent.parent
    sys.path.insert(0, str(repo))
    write_snapshots(str(repo / "conf"))
    print(f"wrote {len(CASES)} snapshots to {SNAPSHOTS}")
