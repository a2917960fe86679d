"""Packages the Hydra configs with the code: the wheel's ``workbench/conf/`` is a copy of the
checkout's ``conf/`` (its ``sweep`` link to ``sweeps/`` followed), made at build time.

Why a copy, not a move: the project keeps ``conf/`` and ``sweeps/`` at the top of the
checkout, and setuptools' package data neither reaches outside the package nor follows a
symlinked directory reliably. An editable install keeps reading ``conf/`` in the checkout.
"""
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


class BuildPyWithConfigs(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):  # the checkout's conf/ is found directly
            return
        target = Path(self.build_lib) / "workbench" / "conf"
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(ROOT / "conf", target, symlinks=False,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


setup(cmdclass={"build_py": BuildPyWithConfigs})
