"""Where the Hydra configs are: shipped inside an installed wheel (``workbench/conf/``, see
setup.py), or the checkout's ``conf/`` for a source tree or an editable install. The user's
own ``./conf/`` and ``./sweeps/`` are added by ``hydra_plugins/workbench_searchpath.py``."""
from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def conf_dir() -> Path:
    packaged = _PACKAGE / "conf"
    return packaged if packaged.is_dir() else _PACKAGE.parent / "conf"


CONF_DIR = str(conf_dir())
