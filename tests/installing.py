"""Install a plugin package for real, offline, and run the ``zoo`` command against it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path


def pip_install(source: Path, target: Path) -> None:
    # build from a copy: a build in the source tree leaves build/ and *.egg-info behind
    copy = target.parent / f"src-{source.name}"
    shutil.copytree(source, copy, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__", ".pytest_cache"))
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index", "--target", str(target), str(copy)],
        check=True,
        capture_output=True,
        text=True,
    )


def zoo_command() -> list[str]:
    """The installed ``zoo`` script of this environment (or the same entry point through python)."""
    script = Path(sys.executable).parent / "zoo"
    return [str(script)] if script.exists() else [sys.executable, "-c", "from zoo.entry import main; main()"]


class Installed:
    def __init__(self, site: Path) -> None:
        self.site = site

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        return {**env, "PYTHONPATH": str(self.site), "ZOO_LOAD_PLUGINS": "zoo-example-plugin", **extra}

    def zoo(self, *args: str, cwd: Path, expect: int = 0) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([*zoo_command(), *args], cwd=cwd, env=self.env(), capture_output=True, text=True, timeout=120)
        assert done.returncode == expect, f"zoo {' '.join(args)} exited {done.returncode}\n{done.stdout}\n{done.stderr}"
        return done
