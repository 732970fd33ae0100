"""--all across processes (--jobs) and machines (--shard)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zoo.errors import UsageError
from zoo.exporting.plan import Target, parse_shard, shard_of
from zoo.host.manager import load_zoo

TEMPLATE = load_zoo(entry_points=False).architecture("binary")


def targets(names: list[str]) -> list[Target]:
    return [Target(dataclasses.replace(TEMPLATE, name=name, aliases=()), Path(name)) for name in names]


@given(st.lists(st.from_regex(r"[a-z][a-z0-9-]{0,8}", fullmatch=True), unique=True, max_size=12), st.integers(1, 6))
def test_shards_are_disjoint_and_cover_the_sorted_list(names: list[str], count: int) -> None:
    every = targets(names)
    parts = [shard_of(every, index, count) for index in range(1, count + 1)]
    got = [t.arch.name for part in parts for t in part]
    assert sorted(got) == sorted(names) and len(got) == len(set(got))
    assert all(len(a) - len(b) in (0, 1) for a, b in zip(parts, parts[1:]))  # balanced


@pytest.mark.parametrize("text", ["0/4", "5/4", "1", "a/b", "2/0", "-1/3"])
def test_a_bad_shard_is_a_usage_error(text: str) -> None:
    with pytest.raises(UsageError, match="write I/N with 1 <= I <= N"):
        parse_shard(text)


def test_shard_and_jobs_need_all(run) -> None:
    result = run("export", "binary", "--shard", "1/2")
    assert result.exit_code == 2 and "--jobs and --shard split --all" in result.stderr


def test_each_shard_exports_its_part_and_reports_a_json_list(run, tmp_path: Path) -> None:
    seen = []
    for index in (1, 2):
        result = run("export", "--all", "-o", ".", "--shard", f"{index}/2", "--report", f"shard{index}.json")
        assert result.exit_code == 0, result.stderr
        records = json.loads((tmp_path / f"shard{index}.json").read_text())
        assert isinstance(records, list) and all(r["status"] == "ok" for r in records)
        seen += [r["architecture"] for r in records]
    assert sorted(seen) == ["binary-sigmoid", "multiclass-softmax", "three-layer-stack"]


def test_jobs_export_every_architecture_in_worker_processes(run, tmp_path: Path) -> None:
    result = run("export", "--all", "-o", ".", "--jobs", "2", "--report", "all.json")
    assert result.exit_code == 0, result.stderr
    records = json.loads((tmp_path / "all.json").read_text())
    assert [r["architecture"] for r in records] == ["binary-sigmoid", "multiclass-softmax", "three-layer-stack"]  # sorted, whatever finished first
    assert {r["status"] for r in records} == {"ok"} and all(r["verification"]["ok"] for r in records)
    progress = [line.split() for line in result.stderr.splitlines() if line.startswith("[")]
    assert [p[0] for p in progress] == ["[1/3]", "[2/3]", "[3/3]"]  # counted as they finish, in any order
    assert sorted(p[1] for p in progress) == [r["architecture"] for r in records] and {p[2] for p in progress} == {"ok"}
    for record in records:
        assert Path(tmp_path, record["files"][0]["path"]).is_file()
    assert "binary-sigmoid" in result.stdout.splitlines()[1]  # the summary table, in name order


def test_jobs_refuse_plugins_that_workers_cannot_load(run) -> None:
    from zoo import Architecture, Input, Output, hookimpl

    class Plugin:
        @hookimpl
        def register_architectures(self, register):
            register(Architecture("local-only", lambda: None, (Input("x", ("batch", 2)),), (Output("y"),)))

    zoo = load_zoo(entry_points=False, extra=[("local", Plugin())])
    result = run("export", "--all", "-o", ".", "--jobs", "2", zoo=zoo)
    assert result.exit_code == 2 and "workers cannot load it (use --jobs 1)" in result.stderr


def test_a_workers_record_reaches_the_parent_as_plain_data(tmp_path: Path) -> None:
    """Unpickling a record imports nothing: a torch version string or a numpy float in
    it would make the parent, which never needs torch, import it (seconds, on a busy machine)."""
    import enum
    import pickle
    import pickletools

    import numpy as np
    import torch

    from zoo.build.model import build_model
    from zoo.exporting.pipeline import export_model
    from zoo.records import to_json

    zoo = load_zoo(entry_points=False)
    record = export_model(build_model(zoo.architecture("binary")), zoo.exporter("onnx"), tmp_path / "b.onnx").to_dict()
    class Mode(str, enum.Enum):  # a plugin's parameter default, say
        FAST = "fast"

    class Level(enum.IntEnum):
        HIGH = 3

    extra = {"version": torch.__version__, "error": np.float64(0.5), "count": np.int64(3), "mode": Mode.FAST, "level": Level.HIGH}
    record["extra"] = to_json(extra)
    imports = [arg for op, arg, _ in pickletools.genops(pickle.dumps(record)) if "GLOBAL" in op.name]
    assert imports == []
    assert record["extra"] == {"version": str(torch.__version__), "error": 0.5, "count": 3, "mode": "fast", "level": 3}
    assert [type(v) for v in record["extra"].values()] == [str, float, int, str, int]


def test_the_zoo_program_freezes_its_objects_before_the_interpreter_shuts_down(tmp_path: Path) -> None:
    """The collection at shutdown would walk torch's objects for about a second after every export."""
    script = (
        "import atexit, gc, sys\n"
        "atexit.register(lambda: print('frozen at exit:', gc.get_freeze_count() > 0))\n"  # runs after zoo's own handlers
        "sys.argv = ['zoo', 'list']\n"
        "from zoo.entry import main\n"
        "main()\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "frozen at exit: True"


# -- signals and dead workers --------------------------------------------------------------


def start_jobs(tmp_path: Path) -> subprocess.Popen[str]:
    """``zoo export --all --jobs 2`` as the leader of its own process group (the workers join it)."""
    return subprocess.Popen(
        [sys.executable, "-m", "zoo", "export", "--all", "-o", "out", "--jobs", "2"], cwd=tmp_path,
        env={**os.environ, "ZOO_LOAD_PLUGINS": ""}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )


def wait_for_exports(proc: subprocess.Popen[str], out: Path) -> None:
    deadline = time.monotonic() + 120
    while not (out.is_dir() and list(out.glob(".*.zoo-*.tmp"))):  # a worker's staging folder: it is exporting
        assert proc.poll() is None, f"zoo ended before exporting: {proc.communicate()}"
        assert time.monotonic() < deadline, "no staging folder appeared"
        time.sleep(0.02)


def group_ends(pgid: int) -> bool:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def workers_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if entry.name.isdigit() and int(fields[1]) == pid and b"spawn_main" in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except (OSError, IndexError, ValueError):
            continue
    return found


@pytest.mark.parametrize(("how", "code", "line"), [
    ("SIGTERM to zoo alone", 143, "zoo: interrupted (SIGTERM)"),
    ("Ctrl-C to the whole group", 130, "zoo: interrupted"),
    ("SIGHUP to the whole group", 129, "zoo: interrupted (SIGHUP)"),  # a closed terminal: multiprocessing's helper survives it
    ("Ctrl-C while the workers start", 130, "zoo: interrupted"),
])
def test_an_interrupt_stops_every_worker_and_places_nothing_after(tmp_path: Path, how: str, code: int, line: str) -> None:
    proc, out = start_jobs(tmp_path), tmp_path / "out"
    try:
        if how.endswith("start"):  # before any zoo code runs in them: still no worker traceback
            deadline = time.monotonic() + 60
            while not workers_of(proc.pid) and time.monotonic() < deadline:
                time.sleep(0.005)
        else:
            wait_for_exports(proc, out)
        if how.startswith("SIGTERM"):
            proc.send_signal(signal.SIGTERM)  # a scheduler's kill: the workers get it only from zoo
        else:
            os.killpg(proc.pid, signal.SIGHUP if "SIGHUP" in how else signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
        assert group_ends(proc.pid), "a worker outlived zoo"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == code, stderr
    assert stderr.strip().splitlines()[-1] == line and "Traceback" not in stderr
    assert not out.exists() or sorted(p.name for p in out.iterdir()) == []  # every export stopped mid-way: no staging, no file


def test_a_worker_that_dies_is_one_line_naming_the_unfinished_exports(tmp_path: Path) -> None:
    proc, out = start_jobs(tmp_path), tmp_path / "out"
    try:
        wait_for_exports(proc, out)
        os.kill(workers_of(proc.pid)[0], signal.SIGKILL)  # as the OOM killer would
        _, stderr = proc.communicate(timeout=120)
        assert group_ends(proc.pid), "a worker outlived zoo"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 1, stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("zoo: error: a worker process died") and last.endswith("export them with --jobs 1 to find which and why")
    assert "binary-sigmoid" in last and "Traceback" not in stderr
    assert len(list(out.glob(".*.zoo-*.tmp"))) <= 1  # only the killed worker's staging, which the next export into out sweeps


SWALLOWING_PLUGIN = '''
import time

import zoo
from zoo import Architecture, Input, Output


def build(in_features: int = 8):
    from torch import nn

    try:
        time.sleep(60)  # a slow library call...
    except BaseException as exc:  # ...in a library that turns every error, Ctrl-C too, into its own
        raise RuntimeError(f"library call failed: {exc!r}") from exc
    return nn.Linear(in_features, 1)


@zoo.hookimpl
def register_architectures(register):
    register(Architecture("aaa-slow", build, (Input("x", ("batch", "in_features")),), (Output("y"),)))
'''

RUN_WITH_PLUGIN = '''
import sys

if __name__ == "__main__":
    import swallowing
    from zoo.cli.commands import cli
    from zoo.interrupts import as_program
    from zoo.host.manager import load_zoo

    as_program()
    cli(sys.argv[1:], obj=load_zoo(entry_points=False, extra=[("swallowing", swallowing)]), prog_name="zoo")
'''


def test_a_worker_that_swallows_the_interrupt_is_killed_after_the_grace_and_zoo_ends(tmp_path: Path) -> None:
    from zoo.exporting.workers import STOP_GRACE_S

    (tmp_path / "swallowing.py").write_text(SWALLOWING_PLUGIN)
    (tmp_path / "run.py").write_text(RUN_WITH_PLUGIN)
    proc = subprocess.Popen(
        [sys.executable, "run.py", "export", "--all", "-o", "out", "--jobs", "2"], cwd=tmp_path,
        env={**os.environ, "ZOO_LOAD_PLUGINS": "", "PYTHONPATH": str(tmp_path)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    try:
        wait_for_exports(proc, tmp_path / "out")  # the other worker exports; aaa-slow's worker sleeps in its build
        os.killpg(proc.pid, signal.SIGINT)
        _, stderr = proc.communicate(timeout=STOP_GRACE_S + 50)  # before: it waited forever on that worker
        assert group_ends(proc.pid), "a worker outlived zoo"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, stderr
    assert stderr.strip().splitlines()[-1] == "zoo: interrupted" and "Traceback" not in stderr
