"""The user's own configs beside the workbench's: ``./conf/`` (any group, searched first, so a
user's file of the same name wins) and ``./sweeps/<name>.yaml`` (the ``sweep`` group, like the
packaged sweep files; a packaged sweep of the same name wins), both in the directory
``workbench`` was started in. Only for the workbench's own app."""
from __future__ import annotations

from pathlib import Path

from hydra.core.config_search_path import ConfigSearchPath
from hydra.core.config_store import ConfigStore
from hydra.plugins.search_path_plugin import SearchPathPlugin
from omegaconf import OmegaConf

GLOBAL_HEADER = "# @package _global_"


def _same(a: Path, b: Path) -> bool:
    return a.resolve() == b.resolve()


def register_user_sweeps(directory: Path, packaged: Path) -> list[str]:
    """Each ``<directory>/<name>.yaml`` as the config ``sweep/<name>``; returns the names."""
    if not directory.is_dir() or _same(directory, packaged):
        return []
    store = ConfigStore.instance()
    names = []
    for path in sorted(directory.glob("*.yaml")):
        text = path.read_text()
        package = "_global_" if GLOBAL_HEADER in text.split("\n", 3)[:3] else None
        store.store(group="sweep", name=path.stem, node=OmegaConf.create(text), package=package,
                    provider="workbench-user")
        names.append(path.stem)
    return names


class WorkbenchUserConfigs(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        from workbench.packaged import conf_dir

        packaged = conf_dir()
        primary = [e.path for e in search_path.get_path() if e.provider == "main"]
        if not any(str(p).removeprefix("file://") == str(packaged) for p in primary):
            return  # another Hydra app
        user_conf = Path.cwd() / "conf"
        if user_conf.is_dir() and not _same(user_conf, packaged):
            search_path.prepend("workbench-user", f"file://{user_conf}")
        register_user_sweeps(Path.cwd() / "sweeps", packaged / "sweep")
