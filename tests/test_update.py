"""``zoo export --update``: a file zoo wrote is kept when it is still what the
request would export and still verifies; anything else is exported again, and a
file zoo did not write is left alone."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
import torch

import zoo
from zoo.host.manager import load_zoo


def record(result) -> dict:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def export(run, *args: str, the_zoo=None) -> dict:
    return record(run("export", "stack", "-o", "m.onnx", "--update", "--json", *args, zoo=the_zoo))


def set_metadata(path: Path, key: str, value: str) -> None:
    """The file as an earlier zoo or torch would have written it."""
    model = onnx.load(str(path))
    for prop in model.metadata_props:
        if prop.key == key:
            prop.value = value
    onnx.save(model, str(path))


def test_an_unchanged_file_is_kept_after_a_verification(run, tmp_path: Path) -> None:
    first = export(run)
    assert first["update"] == {"status": "exported", "reason": "no file was there"}
    before = (tmp_path / "m.onnx").stat().st_mtime_ns
    kept = export(run)
    assert kept["update"] == {"status": "up to date", "reason": "verified"}
    assert kept["verification"]["ok"] and len(kept["verification"]["cases"]) >= 3
    assert "export" not in kept["timings_s"] and "check" not in kept["timings_s"]  # a verification, not an export
    assert (tmp_path / "m.onnx").stat().st_mtime_ns == before
    text = run("export", "stack", "-o", "m.onnx", "--update")
    assert text.exit_code == 0 and text.stdout.splitlines()[-1] == "up to date (verified)"


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (("--param", "width=7"), "parameters changed"),
        (("--seed", "5"), "seed changed (0 → 5)"),
        (("--opset", "19"), "opset changed (20 → 19)"),
        (("--static",), "static shapes changed (false → true)"),
        (("--fold-linear",), "format options changed (none → {\"fold_linear\": true})"),
    ],
)
def test_a_changed_request_exports_again(run, tmp_path: Path, args: tuple[str, ...], reason: str) -> None:
    export(run)
    again = export(run, *args)
    assert again["update"]["status"] == "exported" and again["update"]["reason"].startswith(reason), again["update"]
    assert again["status"] == "ok"
    assert export(run, *args)["update"]["status"] == "up to date"  # the new file is what was asked for


def test_other_weights_export_again(run, tmp_path: Path, zoo) -> None:
    from zoo.build.model import build_model

    module = build_model(zoo.architecture("stack")).module
    torch.save(module.state_dict(), tmp_path / "a.pt")
    with torch.no_grad():
        next(module.parameters()).add_(1.0)
    torch.save(module.state_dict(), tmp_path / "b.pt")
    export(run, "--weights", "a.pt")
    assert export(run, "--weights", "a.pt")["update"]["status"] == "up to date"
    again = export(run, "--weights", "b.pt")
    assert again["update"]["reason"].startswith("weights (sha256) changed"), again["update"]
    assert export(run)["update"]["reason"].startswith("weights (sha256) changed")  # seeded weights now: none asked for


@pytest.mark.parametrize(("key", "label"), [("zoo.version", "zoo version"), ("zoo.torch_version", "torch version")])
def test_a_file_from_another_version_exports_again(run, tmp_path: Path, key: str, label: str) -> None:
    export(run)
    set_metadata(tmp_path / "m.onnx", key, "0.0.1")
    again = export(run)
    assert again["update"]["reason"].startswith(f"{label} changed (0.0.1 → "), again["update"]
    assert onnx.load(str(tmp_path / "m.onnx")).metadata_props  # replaced by a file of this version
    assert export(run)["update"]["status"] == "up to date"


class Drifting:
    """A plugin whose architecture computes something else from one release to the next, under the same name."""

    offset = 0.0

    @zoo.hookimpl
    def register_architectures(self, register):
        register(
            zoo.Architecture(
                name="drifting",
                build=self.build,
                inputs=(zoo.Input("x", ("batch", 4)),),
                outputs=(zoo.Output("y", task="regression", shape=("batch", 2)),),
            )
        )

    def build(self):
        offset = self.offset

        class Shifted(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.linear = torch.nn.Linear(4, 2)

            def forward(self, x):
                return self.linear(x) + offset

        return Shifted()


def test_a_plugin_that_now_computes_something_else_exports_again(run, tmp_path: Path) -> None:
    plugin = Drifting()
    the_zoo = load_zoo(entry_points=False, extra=[("drifting", plugin)])
    first = record(run("export", "drifting", "-o", "d.onnx", "--update", "--json", zoo=the_zoo))
    assert first["update"]["status"] == "exported"
    plugin.offset = 0.5  # same name, parameters, seed and versions; another function
    again = record(run("export", "drifting", "-o", "d.onnx", "--update", "--json", zoo=the_zoo))
    assert again["update"]["status"] == "exported", again["update"]
    assert again["update"]["reason"].startswith("it no longer verifies against the model"), again["update"]
    kept = record(run("export", "drifting", "-o", "d.onnx", "--update", "--json", zoo=the_zoo))
    assert kept["update"]["status"] == "up to date"


def test_a_file_zoo_did_not_write_is_left_alone(run, tmp_path: Path) -> None:
    foreign = tmp_path / "m.onnx"
    foreign.write_bytes(b"someone else's model")
    result = run("export", "stack", "-o", "m.onnx", "--update")
    assert result.exit_code == 2
    assert result.stderr == "zoo: error: 'm.onnx' already exists and zoo did not write it; --update leaves it alone (pass --force to overwrite it)\n"
    assert foreign.read_bytes() == b"someone else's model"
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "binary-sigmoid.onnx").write_bytes(b"not zoo's")
    every = run("export", "--all", "-o", "out", "--update")
    assert every.exit_code == 1
    assert (tmp_path / "out" / "binary-sigmoid.onnx").read_bytes() == b"not zoo's"
    assert every.stdout.splitlines()[-1] == "2 exported, 0 up to date, 1 failed"
    again = run("export", "--all", "-o", "out", "--update", "--jobs", "2")
    assert again.stdout.splitlines()[-1] == "0 exported, 2 up to date, 1 failed", again.output


def test_a_large_models_weights_are_freed_before_the_runtime_loads(run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past RELEASE_BYTES the pipeline frees PyTorch's weights once its reference
    outputs exist; the verification still compares against them."""
    from zoo.exporting import pipeline
    from zoo.verification import runtimes as verify_runtimes

    monkeypatch.setattr(pipeline, "RELEASE_BYTES", 0)
    events: list[str] = []
    real_release, real_call = pipeline.release_weights, verify_runtimes.call_exporter

    def release(built) -> None:
        events.append("forward done" if built.module is not None else "?")
        real_release(built)
        assert all(p.is_meta for p in built.module.parameters())  # no data left
        events.append("released")

    def call(function, *args, **kwargs):
        if getattr(function, "__name__", "") == "load":
            events.append("runtime loads")
        return real_call(function, *args, **kwargs)

    monkeypatch.setattr(pipeline, "release_weights", release)
    monkeypatch.setattr(verify_runtimes, "call_exporter", call)  # the runner is loaded there
    result = record(run("export", "stack", "-o", "m.onnx", "--json"))
    assert result["status"] == "ok" and len(result["verification"]["cases"]) >= 3
    assert events == ["forward done", "released", "runtime loads"]


def test_the_backward_check_leaves_no_gradient_behind(zoo) -> None:
    from zoo.build.model import build_model
    from zoo.checking.checks import check_model

    built = build_model(zoo.architecture("stack"))
    result = check_model(built)
    assert result.ok and result.gradients["checked"] and result.gradients["norm"] > 0
    assert all(p.grad is None and not p._post_accumulate_grad_hooks for p in built.module.parameters())
