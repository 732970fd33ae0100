"""The plugin author's path: no silent traps (Dim names, build errors, a runner
without providers), and a CLI that does what its docs say (--all -o, --json errors)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from zoo import Architecture, Dim, Exporter, Input, Output, ParameterError, hookimpl
from zoo.cli.commands import cli
from zoo.host.manager import load_zoo


def invoke(*args, zoo=None):
    return CliRunner().invoke(cli, [str(a) for a in args], obj=zoo, catch_exceptions=False)


def _resnet(width: int = 16):
    from torch import nn

    return nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 2))


class DimNamedLikeParameter:
    @hookimpl
    def register_architectures(self, register):
        image = Input("image", ("batch", 3, Dim("height", sample=8), Dim("width", sample=8)))
        register(Architecture(name="tiny-resnet", build=_resnet, inputs=(image,), outputs=(Output("logits", task="multiclass"),)))


# -- B: a Dim named like a build parameter is refused, not silently fixed ---------------------


def test_a_dim_named_like_a_build_parameter_is_refused_naming_plugin_dim_and_parameter():
    zoo = load_zoo(entry_points=False, extra=[("vision", DimNamedLikeParameter())])
    assert zoo.architectures.get("tiny-resnet") is None
    (problem,) = [p for p in zoo.problems if p.startswith("plugin 'vision'")]
    assert "input 'image': Dim('width') has the name of build parameter 'width'" in problem


def test_a_plain_string_still_binds_to_the_parameter():
    arch = Architecture(name="fine", build=_resnet, inputs=(Input("image", ("batch", 3, "width", "width")),), outputs=(Output("y"),))
    assert arch.shape_text({"width": 5}) == "image: batch×3×5×5"


# -- C: export --all -o makes a missing folder (its parent must exist) ------------------------


def test_export_all_creates_the_output_folder(tmp_path):
    out = tmp_path / "out"
    result = invoke("export", "--all", "binary-sigmoid", "-o", out)
    assert result.exit_code == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["binary-sigmoid.onnx"]


def test_export_all_refuses_a_missing_parent_and_creates_nothing(tmp_path):
    result = invoke("export", "--all", "-o", tmp_path / "a" / "b")
    assert result.exit_code == 2
    assert "parent folder" in result.stderr and "create it first" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_export_all_creates_no_folder_when_another_option_is_wrong(tmp_path):
    result = invoke("export", "--all", "-o", tmp_path / "out", "--opset", "3")
    assert result.exit_code == 2
    assert not (tmp_path / "out").exists()


# -- D: a plugin's ParameterError names the architecture ---------------------------------------


def _divisible(d_model: int = 65, nhead: int = 4):
    if d_model % nhead:
        raise ParameterError(f"d_model ({d_model}) must be divisible by nhead ({nhead})")
    from torch import nn

    return nn.Linear(d_model, 1)


class Divisible:
    @hookimpl
    def register_architectures(self, register):
        register(Architecture(name="attn", build=_divisible, inputs=(Input("x", ("batch", "d_model")),), outputs=(Output("y"),)))


def test_a_parameter_error_from_build_names_the_architecture():
    zoo = load_zoo(entry_points=False, extra=[("attn", Divisible())])
    result = invoke("check", "attn", zoo=zoo)
    assert result.exit_code == 2
    assert result.stderr.strip() == "zoo: error: architecture 'attn': d_model (65) must be divisible by nhead (4)"


# -- E: with --json, usage errors print a failed record too ------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("export", "nosuch", "--json"),
        ("export", "binary", "--json", "--device", "tpu"),
        ("check", "binary", "--json", "-p", "bogus=1"),
        ("list", "--json", "--bogus"),
        ("plugins", "--json", "extra"),
        ("verify", "missing.onnx", "--json"),
        ("bench", "binary", "--json", "--batch-sizes", "0"),
        ("show", "multi", "-p", "n_classes=1", "--json"),
    ],
)
def test_json_usage_errors_print_a_failed_record(args, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke(*args)
    assert result.exit_code == 2
    record = json.loads(result.stdout)
    assert record["status"] == "failed" and record["exit_code"] == 2
    assert record["error"] and record["error"] in result.stderr


def test_without_json_a_usage_error_prints_nothing_on_stdout():
    result = invoke("export", "nosuch")
    assert result.exit_code == 2 and result.stdout == ""


def test_a_failed_verify_with_json_prints_one_record(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx")
    result = invoke("verify", bad, "--json")
    json.loads(result.stdout)  # exactly one JSON document, not two


# -- F: a runner without providers shows none in the verify header -----------------------------


class NoProviders:
    """A format with its own runner (a zoo.Runner) that names no providers."""

    def __init__(self, runner_of=None):
        self.runner_of = runner_of

    @hookimpl
    def register_exporters(self, register):
        from zoo.exporters import onnx

        import zoo

        class Plain(zoo.Runner):
            def __init__(self, path, device):
                self.inner = onnx.load(path, device)
                self.info = zoo.RunnerInfo("plain runner")
                self.input_names, self.output_names = self.inner.input_names, self.inner.output_names
                self.input_shapes = self.inner.input_shapes

            def run(self, feed):
                return self.inner.run(feed)

        load = self.runner_of or Plain
        register(Exporter("plain", ".plain.onnx", onnx.export, load, onnx.read_metadata, default_opset=20))


def test_a_runner_without_providers_shows_no_brackets(tmp_path):
    zoo = load_zoo(entry_points=False, extra=[("plain", NoProviders())])
    result = invoke("export", "binary", "--format", "plain", "-o", tmp_path / "b.plain.onnx", zoo=zoo)
    assert result.exit_code == 0, result.stderr
    (header,) = [line for line in result.stdout.splitlines() if line.startswith("  verify")]
    assert header.startswith("  verify    plain runner against PyTorch") and "[" not in header


def test_a_loader_that_returns_no_zoo_runner_is_one_line_naming_the_plugin(tmp_path):
    """The runner contract is checked once, at load: not as an AttributeError mid-verification."""
    from zoo.exporters import onnx

    def plain_function(path, device):
        session = onnx.load(path, device)
        return lambda feed: session.run(feed)

    zoo = load_zoo(entry_points=False, extra=[("plain", NoProviders(plain_function))])
    result = invoke("export", "binary", "--format", "plain", "-o", tmp_path / "b.plain.onnx", zoo=zoo)
    assert result.exit_code == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip() == (
        "zoo: error: the plain exporter (plugin 'plain') load() returned function, not a zoo.Runner (see docs/plugins.md#runners)"
    )
    assert not (tmp_path / "b.plain.onnx").exists()


# -- G: zoo.testing shows the exporter's reason (-v does not apply under pytest) -----------------


class Breaks:
    @hookimpl
    def register_exporters(self, register):
        from zoo.exporters import onnx

        def export(job):
            try:
                raise KeyError("aten::frobnicate")
            except KeyError as exc:
                raise RuntimeError("Failed to export the model\n(pages of exporter context)") from exc

        register(Exporter("breaks", ".breaks", export, onnx.load, onnx.read_metadata))


def test_zoo_testing_failures_carry_the_exporters_reason(tmp_path):
    import zoo.testing

    with pytest.raises(pytest.fail.Exception) as failed:
        zoo.testing.check_export_verify("binary", tmp_path, plugin=Breaks(), exporter="breaks")
    message = str(failed.value)
    assert "run with -v" not in message
    assert "the exporter said: RuntimeError: Failed to export the model\n(pages of exporter context)" in message
    assert "caused by KeyError: 'aten::frobnicate'" in message


# -- J: shell completion of architecture names, formats and plugin commands ----------------------


def complete(words: str, zoo=None) -> list[str]:
    """What bash would offer for the last word of ``words`` (click's bash_complete protocol)."""
    env = {"_ZOO_COMPLETE": "bash_complete", "COMP_WORDS": words, "COMP_CWORD": str(len(words.split(" ")) - 1)}
    result = CliRunner().invoke(cli, [], env=env, obj=zoo, prog_name="zoo")
    assert result.exit_code == 0, result.output
    return [line.split(",", 1)[1] for line in result.stdout.splitlines()]


def test_completion_offers_architecture_names_and_aliases():
    assert complete("zoo export mul") == ["multiclass-softmax", "multiclass"]
    assert complete("zoo bench st") == ["stack"]  # the name starts with "three"


def test_completion_offers_formats_and_plugin_commands(example_plugin):
    the_zoo = load_zoo(entry_points=False, extra=[("example", example_plugin)])
    assert complete("zoo export text --format ", zoo=the_zoo) == ["onnx", "pt2"]
    assert "pt2-info" in complete("zoo pt", zoo=the_zoo)
    assert complete("zoo check ta", zoo=the_zoo) == ["tag-model", "tags"]
