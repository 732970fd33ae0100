"""The Python API (zoo.check/export/verify), ``zoo --plugin``, ``--size``, weights by their tensors."""

from __future__ import annotations

import json
import math
import subprocess
import textwrap
from pathlib import Path

import pytest
from installing import zoo_command

import zoo
from zoo.verification.results import CaseResult, Verification

MY_MODELS = textwrap.dedent('''
    import zoo
    from zoo import Architecture, Input, Output


    def tiny(in_features: int = 4, hidden: int = 16, n_classes: int = 3):
        from torch import nn

        return nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, n_classes))


    @zoo.hookimpl
    def register_architectures(register):
        register(Architecture(name="tiny", summary="Linear → ReLU → Linear", build=tiny,
                              inputs=[Input("x", ("batch", "in_features"))],
                              outputs=[Output("logits", task="multiclass", shape=("batch", "n_classes"))]))
''')


def test_zoo_plugin_exports_a_module_from_an_empty_folder_with_workers_too(tmp_path: Path) -> None:
    (tmp_path / "my_models.py").write_text(MY_MODELS)
    done = subprocess.run([*zoo_command(), "--plugin", "./my_models.py", "export", "tiny"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "export tiny (plugin my_models" in done.stdout and (tmp_path / "tiny.onnx").exists()
    # the file names its plugin; zoo verify finds it again with the same --plugin
    again = subprocess.run([*zoo_command(), "--plugin", "my_models.py", "verify", "tiny.onnx", "--json"], cwd=tmp_path,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["status"] == "ok"


def test_a_plugin_path_that_is_not_there_is_one_usage_line(tmp_path: Path) -> None:
    done = subprocess.run([*zoo_command(), "--plugin", "missing.py", "list"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.strip().count("\n") == 0
    assert "--plugin missing.py: no such .py file" in done.stderr


def test_a_broken_plugin_file_is_isolated_like_an_installed_one(tmp_path: Path) -> None:
    (tmp_path / "broken.py").write_text("raise RuntimeError('half-written')\n")
    the_zoo = zoo.api.loaded_zoo([tmp_path / "broken.py"], entry_points=False)
    assert any("plugin 'broken': failed to import: RuntimeError: half-written" in p for p in the_zoo.problems)
    assert the_zoo.architecture("binary").name == "binary-sigmoid"


def test_the_python_api_returns_the_json_records(tmp_path: Path) -> None:
    plugin = tmp_path / "my_models.py"
    plugin.write_text(MY_MODELS)
    checked = zoo.check("tiny", params={"hidden": 8}, plugins=[plugin])
    assert checked["ok"] is True and checked["params"]["hidden"] == 8
    exported = zoo.export("tiny", tmp_path / "tiny.onnx", params={"hidden": 8}, plugins=[plugin])
    assert exported["status"] == "ok" and exported["params"]["hidden"] == 8, exported["error"]
    assert [case["sizes"] for case in exported["verification"]["cases"]] == [{"batch": 2}, {"batch": 1}, {"batch": 64}]
    verified = zoo.verify(tmp_path / "tiny.onnx", plugins=[plugin])
    assert verified["status"] == "ok" and verified["verification"]["max_abs_error"] < 1e-5
    with pytest.raises(zoo.UsageError, match="already exists"):
        zoo.export("tiny", tmp_path / "tiny.onnx", plugins=[plugin])
    # the same record as --json, key for key
    assert set(exported) == set(json.loads(json.dumps(exported)))


def test_size_batch_8_with_static_exports_and_verifies_at_batch_8(tmp_path: Path) -> None:
    exported = zoo.export("binary", tmp_path / "b8.onnx", static=True, sizes={"batch": 8})
    assert exported["status"] == "ok"
    assert [case["sizes"] for case in exported["verification"]["cases"]] == [{"batch": 8}]
    verified = zoo.verify(tmp_path / "b8.onnx")
    assert verified["status"] == "ok" and [case["sizes"] for case in verified["verification"]["cases"]] == [{"batch": 8}]
    dynamic = zoo.export("binary", tmp_path / "b8-dynamic.onnx", sizes={"batch": 8})
    assert [case["sizes"]["batch"] for case in dynamic["verification"]["cases"]] == [8, 1, 64]
    with pytest.raises(zoo.UsageError, match="'seq' is not a dynamic dimension"):
        zoo.export("binary", tmp_path / "x.onnx", sizes={"seq": 8})


def test_weights_are_matched_by_their_tensors_whatever_the_container(tmp_path: Path) -> None:
    import torch
    from safetensors.torch import save_file

    from zoo.build.model import build_model
    from zoo.host.manager import load_zoo

    module = build_model(load_zoo().architecture("binary"), seed=7).module
    state = {k: v.contiguous() for k, v in module.state_dict().items()}
    save_file(state, tmp_path / "trained.safetensors")
    torch.save(state, tmp_path / "trained.pt")
    other = {k: v + 1 for k, v in state.items()}
    torch.save(other, tmp_path / "other.pt")
    exported = zoo.export("binary", tmp_path / "b.onnx", weights=tmp_path / "trained.safetensors")
    assert exported["status"] == "ok" and len(exported["weights"]["tensors_sha256"]) == 64
    assert exported["weights"]["sha256"] != exported["weights"]["tensors_sha256"]  # the file's checksum stays too
    assert zoo.verify(tmp_path / "b.onnx", weights=tmp_path / "trained.pt")["status"] == "ok"
    with pytest.raises(zoo.UsageError, match="does not hold the tensors b.onnx was exported with"):
        zoo.verify(tmp_path / "b.onnx", weights=tmp_path / "other.pt")


def test_a_nan_on_one_side_is_never_hidden_by_a_finite_maximum() -> None:
    from zoo.verification.results import summary_row

    cases = [CaseResult({"batch": 2}, {"y": {"max_abs": 2.38e-07}}, []), CaseResult({"batch": 1}, {"y": {"max_abs": math.nan}}, ["x"])]
    for order in (cases, cases[::-1]):
        verification = Verification("ort", [], cases=list(order))
        assert math.isnan(verification.max_abs) and verification.to_dict()["max_abs_error"] == "NaN"

    from types import SimpleNamespace

    from zoo.verification.results import ExportResult

    failed = ExportResult(SimpleNamespace(arch=SimpleNamespace(name="m")), None, None, False, files=[Path("m.onnx")],
                          verification=Verification("ort", [], cases=cases), timings={"verify": 1.0}, error="failed")
    assert summary_row(failed)[2] == "nan"  # the --all table's MAX ABS ERROR


def masked_model(vocab_size: int = 20, d_model: int = 8):
    import torch
    from torch import nn

    class MaskedAttention(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed, self.query, self.head = nn.Embedding(vocab_size, d_model), nn.Linear(d_model, d_model), nn.Linear(d_model, 3)

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            hidden = self.embed(input_ids)
            scores = (self.query(hidden) @ hidden.transpose(1, 2)).masked_fill(attention_mask[:, None, :] == 0, float("-inf"))
            return self.head((scores.softmax(-1) @ hidden)[:, 0])  # a row with no real token: NaN, in PyTorch itself

    return MaskedAttention()


def real_tokens(sizes, generator, params):
    import torch

    ids = torch.randint(0, params["vocab_size"], (sizes["batch"], sizes["seq"]), generator=generator)
    mask = torch.ones(sizes["batch"], sizes["seq"], dtype=torch.int64)
    return {"input_ids": ids, "attention_mask": mask}


class MaskedPlugin:
    def __init__(self, **extra) -> None:
        from zoo import Architecture, Dim, Input, Output

        inputs = (Input("input_ids", ("batch", Dim("seq", sample=6)), dtype="int64", range=(0, "vocab_size")),
                  Input("attention_mask", ("batch", "seq"), dtype="int64", range=(0, 2)))
        self.arch = Architecture("masked", masked_model, inputs, (Output("logits", task="multiclass"),), **extra)

    @zoo.hookimpl
    def register_architectures(self, register):
        register(self.arch)


def test_pytorchs_own_nan_on_random_masks_is_named_with_the_remedy_before_any_export(tmp_path: Path) -> None:
    from zoo.host.manager import load_zoo

    random_masks = load_zoo(entry_points=False, extra=[("masked", MaskedPlugin())])
    checked = zoo.check("masked", zoo=random_masks)
    assert checked["ok"] is False
    [failure] = checked["failures"]
    assert "NaN or infinite in PyTorch itself at batch=2, seq=1, row(s)" in failure and "sample_inputs" in failure
    assert "docs/plugins.md#realistic-inputs-sample_inputs" in failure
    exported = zoo.export("masked", tmp_path / "m.onnx", zoo=random_masks)
    assert exported["status"] == "failed" and "PyTorch itself" in exported["error"] and not (tmp_path / "m.onnx").exists()


def test_an_inputs_file_whose_mask_row_is_empty_fails_naming_the_file_and_pytorchs_rows(tmp_path: Path) -> None:
    import numpy as np

    from zoo.host.manager import load_zoo

    realistic = load_zoo(entry_points=False, extra=[("masked", MaskedPlugin(sample_inputs=real_tokens))])
    mask = np.ones((3, 5), dtype=np.int64)
    mask[1] = 0  # row 1 has no real token
    np.savez(tmp_path / "empty-row.npz", input_ids=np.zeros((3, 5), dtype=np.int64), attention_mask=mask)
    exported = zoo.export("masked", tmp_path / "m.onnx", zoo=realistic, inputs=[tmp_path / "empty-row.npz"])
    assert exported["status"] == "failed"
    failed = [case for case in exported["verification"]["cases"] if not case["ok"]]
    assert [case["source"] for case in failed] == ["empty-row.npz"]
    assert failed[0]["outputs"]["logits"]["torch_nan_rows"] == [1]
    assert exported["error"].startswith("verification failed: empty-row.npz (batch=3, seq=5): PyTorch itself returns NaN in 'logits' on row(s) 1 of 3")
    assert "first_divergence" not in exported["verification"]  # both sides NaN: no node to blame


def test_a_misspelled_hook_and_prefixed_state_dict_keys_get_a_did_you_mean(tmp_path: Path) -> None:
    import torch

    from zoo.build.model import build_model
    from zoo.host.manager import load_zoo

    class Typo:
        @zoo.hookimpl
        def register_architecture(self, register):  # noqa: D102 - misspelled on purpose
            pass

    problems = load_zoo(entry_points=False, extra=[("typo", Typo())]).problems
    assert any("unknown hook 'register_architecture'" in p and p.endswith("did you mean register_architectures?") for p in problems)
    arch = load_zoo(entry_points=False).architecture("binary")
    wrapped = {f"model.{k}": v for k, v in build_model(arch).module.state_dict().items()}  # saved from a wrapper
    torch.save(wrapped, tmp_path / "wrapped.pt")
    # a prefix on every key that the model lacks is recognised and said (issue 20's rule): the weights load
    built = build_model(arch, weights=tmp_path / "wrapped.pt")
    assert built.weights is not None and built.weights["path"].endswith("wrapped.pt")


def test_completion_offers_the_architectures_parameters_and_check_takes_weights(tmp_path: Path) -> None:
    import torch
    from click.shell_completion import BashComplete
    from click.testing import CliRunner

    from zoo.build.model import build_model
    from zoo.cli.commands import cli
    from zoo.host.manager import load_zoo

    complete = BashComplete(cli, {}, "zoo", "_ZOO_COMPLETE")
    assert [c.value for c in complete.get_completions(["export", "multiclass", "-p"], "n_")] == ["n_classes="]
    assert [c.value for c in complete.get_completions(["check", "stack", "-p"], "activation=re")] == ["activation=relu"]
    the_zoo = load_zoo(entry_points=False)
    state = {k: torch.zeros_like(v) for k, v in build_model(the_zoo.architecture("binary")).module.state_dict().items()}
    torch.save(state, tmp_path / "zeros.pt")
    ran = CliRunner().invoke(cli, ["check", "binary", "--weights", str(tmp_path / "zeros.pt"), "--json"], obj=the_zoo)
    assert ran.exit_code == 0, ran.output
    assert json.loads(ran.stdout)["losses"][0]["torch"] == pytest.approx(math.log(2))  # all-zero weights: p = 0.5 everywhere


def test_zoo_bench_times_an_exported_file_found_by_its_metadata(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from zoo.cli.commands import cli
    from zoo.host.manager import load_zoo

    assert zoo.export("binary", tmp_path / "b.onnx", params={"hidden": [6]})["status"] == "ok"
    the_zoo = load_zoo(entry_points=False)
    ran = CliRunner().invoke(cli, ["bench", str(tmp_path / "b.onnx"), "--budget", "0.01", "--batch-sizes", "1,4", "--json"], obj=the_zoo)
    assert ran.exit_code == 0, ran.output
    record = json.loads(ran.stdout)
    assert record["architecture"] == "binary-sigmoid" and record["params"]["hidden"] == [6]
    assert [row["batch"] for row in record["rows"]] == [1, 4]


def test_case_lines_line_up_under_a_long_file_label_and_failures_are_summarised() -> None:
    from zoo.cli.render import verification_lines

    ok = {"max_abs": 1e-8, "max_rel": 1e-7, "out_of_tolerance": 0.0, "abs_error": {"p99": 1e-8}, "ok": True}
    bad = {**ok, "ok": False, "out_of_tolerance": 1.0, "elements": 4, "abs_error": {"p50": 1.0, "p99": 1.0, "max": 1.0},
           "rel_error": {"max": 1.0}, "nan": {"reference": 0, "candidate": 0}, "inf": {"reference": 0, "candidate": 0}, "needed_atol": 1.0}
    cases = [CaseResult({"batch": 2}, {"y": ok}, []), CaseResult({"batch": 5}, {"y": ok}, [], source="a-long-file-name.npz"),
             CaseResult({"batch": 1}, {"y": bad}, ["batch=1: y differs"]), CaseResult({"batch": 64}, {"y": bad}, ["batch=64: y differs"])]
    lines = verification_lines(Verification("ort", [], cases=cases))
    starts = {line.index(" y: ") for line in lines if " y: " in line}
    assert len(starts) == 1  # one column, however long a label
    assert sum(line.strip().startswith("FAILED batch=") for line in lines) == 1  # the first failing case in full
    assert lines[-1].strip() == "FAILED in 2 of 4 cases; each one's statistics with -v, and in --json/--report"
    assert sum("FAILED batch=" in line for line in verification_lines(Verification("ort", [], cases=cases), detail=True)) == 2
