"""Every hook spec works from a third-party plugin, has a test here and is
documented in docs/plugins.md (after datasette's tests/test_plugins.py).

A test for hook ``NAME`` is a function in this module called ``test_hook_NAME...``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

import zoo
from zoo.build.model import build_model
from zoo.cli.commands import cli
from zoo.exporting.pipeline import export_model
from zoo.host.manager import Zoo, load_zoo

GUIDE = Path(__file__).resolve().parent.parent / "docs" / "plugins.md"


def hook_specs() -> dict[str, tuple[str, ...]]:
    """Hook name -> argument names, as zoo's plugin manager sees them."""
    pm = load_zoo(builtins=(), entry_points=False).pm
    return {name: getattr(pm.hook, name).spec.argnames for name in dir(pm.hook) if not name.startswith("_")}


def test_there_are_hook_specs_to_check() -> None:
    # guards the two tests below against passing vacuously
    assert {"register_architectures", "register_exporters", "register_commands"} <= set(hook_specs())


@pytest.mark.parametrize("hook", sorted(hook_specs()))
def test_every_hook_has_a_test(hook: str) -> None:
    tests = [name for name in globals() if name.startswith(f"test_hook_{hook}")]
    assert tests, f"hook {hook!r} has no test: add test_hook_{hook}_... to {Path(__file__).name}"


@pytest.mark.parametrize("hook", sorted(hook_specs()))
def test_every_hook_is_documented_with_its_arguments(hook: str) -> None:
    signature = f"{hook}({', '.join(hook_specs()[hook])})"
    headings = re.findall(r"^#+ `([^`]+)`", GUIDE.read_text(), flags=re.MULTILINE)
    assert signature in headings, f"docs/plugins.md has no heading for `{signature}`"


def test_hook_register_architectures_from_a_third_party_plugin(example_zoo: Zoo) -> None:
    info = example_zoo.plugins["example"]
    assert info.status == "ok", info.errors
    assert info.architectures == ["small-cnn", "token-classifier", "listing-model", "tag-model", "gru-regressor"]
    text = example_zoo.architecture("text")
    assert text.plugin == "example"
    assert text.to_dict()["inputs"] == [
        {"name": "tokens", "shape": ["batch", "seq"], "dtype": "int64", "range": [0, "vocab_size"]},
        {"name": "padding", "shape": ["batch", "seq"], "dtype": "bool", "range": None},
    ]
    # dims named after build parameters resolve to their values; others stay symbolic
    assert example_zoo.architecture("cnn").shape_text({"height": 20}) == "image: batch×3×20×32"


def test_hook_register_architectures_token_ids_respect_the_vocabulary(example_zoo: Zoo) -> None:
    built = build_model(example_zoo.architecture("text"), {"vocab_size": 7})
    tokens = built.sample_inputs({"batch": 64, "seq": 40})["tokens"]
    assert str(tokens.dtype) == "torch.int64" and tuple(tokens.shape) == (64, 40)
    assert int(tokens.min()) == 0 and int(tokens.max()) == 6  # [0, vocab_size), and the range is used
    padding = built.sample_inputs({"batch": 64, "seq": 40})["padding"]  # the plugin's sample_inputs: prefix padding
    assert not padding[:, -1].any() and padding.any()  # every row has a real last token; some rows are padded


@pytest.fixture
def exported_listing_pt2(example_zoo: Zoo, tmp_path: Path) -> Path:
    built = build_model(example_zoo.architecture("listing"))
    result = export_model(built, example_zoo.exporter("pt2"), tmp_path / "listing.pt2")
    assert result.ok, result.error
    return tmp_path / "listing.pt2"


def test_hook_register_runtimes_adds_a_runtime_that_verifies_a_file(run, tmp_path: Path) -> None:
    """A third-party runtime (onnx's reference evaluator, as in the guide) verifies a file the onnx format wrote."""
    import zoo as zoo_api

    class Reference(zoo_api.Runner):
        def __init__(self, path, device, settings):
            import onnx
            from onnx.reference import ReferenceEvaluator

            model = onnx.load(str(path))
            self.evaluator = ReferenceEvaluator(model)
            self.input_names = [i.name for i in model.graph.input]
            self.output_names = [o.name for o in model.graph.output]
            self.input_shapes = {name: () for name in self.input_names}
            self.info = zoo_api.RunnerInfo("onnx-reference", onnx.__version__, device)

        def run(self, feed):
            return dict(zip(self.output_names, self.evaluator.run(None, dict(feed))))

    class Plugin:
        @zoo_api.hookimpl
        def register_runtimes(self, register):
            register(zoo_api.Runtime(name="onnx-reference", formats=("onnx",), load=Reference))

    zoo = load_zoo(entry_points=False, extra=[("reference", Plugin())])
    assert zoo.plugins["reference"].runtimes == ["onnx-reference"]
    exported = run("export", "binary", "--runtime", "onnx-reference", "--json", zoo=zoo)
    assert exported.exit_code == 0, exported.output
    assert json.loads(exported.stdout)["verification"]["runtime_info"]["name"] == "onnx-reference"
    assert "verify    onnx-reference" in run("verify", "binary-sigmoid.onnx", zoo=zoo).output  # the file names its runtime


def test_hook_register_exporters_adds_a_format_that_exports_and_verifies(example_zoo: Zoo, run, tmp_path: Path) -> None:
    assert example_zoo.plugins["example"].exporters == ["pt2"]
    exported = run("export", "listing", "--format", "pt2", "-o", str(tmp_path / "l.pt2"), "--json", zoo=example_zoo)
    assert exported.exit_code == 0, exported.output
    record = json.loads(exported.output)
    assert record["exporter"] == {"name": "pt2", "plugin": "example", "opset": None, "static": False}
    assert [case["sizes"] for case in record["verification"]["cases"]] == [{"batch": 2}, {"batch": 1}, {"batch": 64}]
    verified = run("verify", str(tmp_path / "l.pt2"), zoo=example_zoo)
    assert verified.exit_code == 0, verified.output
    assert "verify listing-model (plugin example" in verified.output


def test_hook_register_exporters_archive_that_computes_something_else_fails_verify(
    example_zoo: Zoo, run, exported_listing_pt2: Path
) -> None:
    # The file's metadata names seed 0; rebuilding with another seed must not verify.
    from zoo_example_plugin import pt2

    program, manifest = pt2.load_program(exported_listing_pt2)
    import torch

    manifest["metadata"]["zoo.seed"] = "1"
    torch.export.save(program, str(exported_listing_pt2), extra_files={pt2.MANIFEST: json.dumps(manifest)})
    result = run("verify", str(exported_listing_pt2), zoo=example_zoo)
    assert result.exit_code == 1
    assert "differs from PyTorch" in result.output


def test_hook_register_commands_adds_a_working_command(example_zoo: Zoo, run, exported_listing_pt2: Path) -> None:
    listed = run("--help", zoo=example_zoo)
    assert "pt2-info" in listed.output
    result = run("pt2-info", str(exported_listing_pt2), "--json", zoo=example_zoo)
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["architecture"] == "listing-model" and info["inputs"] == ["numeric", "category"]
    assert info["operators"]["aten.embedding.default"] == 1
    missing = run("pt2-info", "nowhere.pt2", zoo=example_zoo)
    assert missing.exit_code == 2, missing.output
    assert missing.output.splitlines() == ["zoo: error: 'nowhere.pt2' does not exist"]


def test_hook_register_commands_a_command_gets_the_running_zoo() -> None:
    """zoo.get_zoo() is the Zoo the command line runs with (here one given with
    obj=), not a fresh load: an architecture only that Zoo has is found."""

    class Commands:
        @zoo.hookimpl
        def register_commands(self, cli: click.Group) -> None:
            @cli.command("count")
            def count() -> None:
                the_zoo = zoo.get_zoo()
                if "only-here" not in the_zoo.architectures:
                    raise zoo.UsageError("not the running zoo")
                click.echo(len(the_zoo.architectures))

    the_zoo = load_zoo(entry_points=False, extra=[("commands", Commands())])
    the_zoo.architectures.add(
        zoo.Architecture(name="only-here", build=lambda: None, inputs=(zoo.Input("x", (1,)),), outputs=(zoo.Output("y"),))
    )
    ran = CliRunner().invoke(cli, ["count"], obj=the_zoo)
    assert (ran.exit_code, ran.output) == (0, f"{len(the_zoo.architectures)}\n")
    refused = CliRunner().invoke(cli, ["count"], obj=load_zoo(entry_points=False, extra=[("commands", Commands())]))
    assert (refused.exit_code, refused.output) == (2, "zoo: error: not the running zoo\n")


def test_get_zoo_outside_a_command_says_what_to_use() -> None:
    with pytest.raises(RuntimeError, match="zoo.load_zoo"):
        zoo.get_zoo()


def test_hook_register_commands_cannot_replace_a_builtin_command() -> None:
    class Hijacker:
        @zoo.hookimpl
        def register_commands(self, cli: click.Group) -> None:
            @cli.command("export")
            def fake_export() -> None:
                """Not zoo's export."""

    the_zoo = load_zoo(entry_points=False, extra=[("hijacker", Hijacker())])
    group = click.Group("plugin-commands")
    the_zoo.add_commands(group, reserved={"export", "list"})
    assert "export" not in group.commands
    assert the_zoo.plugins["hijacker"].errors == ["command 'export' is a built-in zoo command; skipped"]


# -- register_tasks -------------------------------------------------------------------------------

Q = 0.9  # the quantile a pinball loss estimates


def _pinball_torch(output, prediction, target):
    import torch

    diff = target - prediction
    return torch.maximum(Q * diff, (Q - 1) * diff).mean()


def _pinball_numpy(output, y, t, dtype):
    import numpy as np

    diff = t - y
    return float(np.mean(np.maximum(Q * diff, (Q - 1) * diff)))


def _normal(output, prediction, generator):
    import torch

    return torch.randn(prediction.shape, generator=generator)


def _lipschitz_slack(output, y, t, rtol, atol, dtype):
    import numpy as np

    return float(np.mean(atol + rtol * np.abs(y)))  # pinball is 1-Lipschitz in each output


QUANTILE = zoo.Task(
    name="quantile", heads={None: f"pinball loss (q={Q})"}, torch_loss=_pinball_torch, closed_form_loss=_pinball_numpy,
    make_target=_normal, loss_slack=_lipschitz_slack, summary="the 0.9 quantile: pinball loss",
)


def _quantile_net(features: int = 4):
    from torch import nn

    return nn.Sequential(nn.Linear(features, 8), nn.ReLU(), nn.Linear(8, 1))


class QuantilePlugin:
    @zoo.hookimpl
    def register_tasks(self, register):
        register(QUANTILE)

    @zoo.hookimpl
    def register_architectures(self, register):
        register(zoo.Architecture(name="q90", build=_quantile_net, inputs=(zoo.Input("x", ("batch", "features")),),
                                  outputs=(zoo.Output("q", task="quantile", shape=("batch", 1)),)))


def test_hook_register_tasks_a_plugin_task_is_checked_exported_and_verified(tmp_path: Path) -> None:
    from zoo.checking.checks import check_model
    from zoo.verification.artifact import verify_artifact

    the_zoo = load_zoo(entry_points=False, extra=[("quantiles", QuantilePlugin())])
    assert not the_zoo.problems
    assert the_zoo.plugins["quantiles"].tasks == ["quantile"] and the_zoo.tasks.get("quantile").plugin == "quantiles"
    built = build_model(the_zoo.architecture("q90"))
    (loss,) = check_model(built).losses
    assert loss.ok and loss.loss == "pinball loss (q=0.9)" and loss.torch > 0
    result = export_model(built, the_zoo.exporter("onnx"), tmp_path / "q90.onnx")
    assert result.ok, result.error
    assert all("loss" in case.outputs["q"] for case in result.verification.cases)
    assert verify_artifact(the_zoo, tmp_path / "q90.onnx").ok


def test_hook_register_tasks_faults_are_isolated() -> None:
    class Raises:
        @zoo.hookimpl
        def register_tasks(self, register):
            register(QUANTILE)
            raise RuntimeError("no quantiles today")

        @zoo.hookimpl
        def register_architectures(self, register):
            QuantilePlugin().register_architectures(register)

    class Duplicate:
        @zoo.hookimpl
        def register_tasks(self, register):
            register(zoo.Task("binary", {None: "mine"}, _pinball_torch, _pinball_numpy, _normal))

    the_zoo = load_zoo(entry_points=False, extra=[("raises", Raises()), ("dupe", Duplicate())])
    assert sorted(t.name for t in the_zoo.tasks) == ["binary", "multiclass", "multilabel", "regression"]
    assert the_zoo.tasks.get("binary").plugin == "tasks"
    assert the_zoo.architectures.get("q90") is None
    problems = "\n".join(the_zoo.problems)
    assert "plugin 'raises': register_tasks raised RuntimeError: no quantiles today; nothing it registered was kept" in problems
    assert (
        "plugin 'raises': architecture 'q90': output 'q' has task 'quantile', which no loaded plugin registers "
        "(tasks: binary, multiclass, multilabel, regression); skipped"
    ) in problems
    assert "plugin 'dupe': task name 'binary' is already registered by plugin 'tasks' (binary); skipped" in problems


def test_hook_register_tasks_zoo_plugins_lists_tasks(run) -> None:
    the_zoo = load_zoo(entry_points=False, extra=[("quantiles", QuantilePlugin())])
    text = run("plugins", zoo=the_zoo).output
    assert "tasks: binary, multiclass, multilabel, regression" in text
    assert "tasks: quantile; architectures: q90" in text
    task_rows = {line.split()[0]: line.split()[1:3] for line in text.split("\nTASK ")[1].splitlines()[1:]}
    assert task_rows["quantile"] == ["none", "quantiles"] and task_rows["binary"] == ["sigmoid,none", "tasks"]
    records = {p["name"]: p for p in json.loads(run("plugins", "--json", zoo=the_zoo).output)}
    assert records["quantiles"]["tasks"] == ["quantile"]
    assert records["tasks"]["tasks"] == ["binary", "multiclass", "multilabel", "regression"]


def test_hook_register_tasks_multilabel_reports_exact_label_sets(example_zoo: Zoo, run, tmp_path: Path) -> None:
    result = run("export", "tags", "-o", str(tmp_path / "tags.onnx"), "--json", zoo=example_zoo)
    assert result.exit_code == 0, result.output
    record = json.loads(result.output)
    (loss,) = record["check"]["losses"]
    assert loss["loss"] == "binary cross-entropy with logits per label" and loss["ok"]
    for case in record["verification"]["cases"]:
        stats = case["outputs"]["tag_logits"]
        assert stats["threshold_agreement"] == 1.0 and stats["exact_match"] == 1.0
    text = run("verify", str(tmp_path / "tags.onnx"), zoo=example_zoo).output
    assert "threshold 100%  exact match 100%  ok" in text


def test_hook_register_weights_for_another_plugins_architecture(example_zoo: Zoo) -> None:
    # more in test_trained_weights.py: downloads, the claim re-scored after export, registration faults
    info = example_zoo.plugins["example"]
    assert info.status == "ok", info.errors
    assert info.weights == ["multiclass-softmax.digits"]
    (entry,) = example_zoo.weights.of("multiclass-softmax")
    assert (entry.plugin, entry.default, entry.claim.metric, entry.claim.eval_set.name) == ("example", True, "accuracy", "digits held-out split")
    assert entry.params == {"in_features": 64, "hidden": (32,), "n_classes": 10, "activation": "relu"}
