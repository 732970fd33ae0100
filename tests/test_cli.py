"""The CLI through click's runner: output a user reads and JSON a script reads."""

from __future__ import annotations

import json

import pytest

from zoo import __version__
from zoo.cli.commands import cli


def test_list_table(run):
    result = run("list")
    assert result.exit_code == 0
    header, *rows = result.stdout.splitlines()
    assert header.split() == ["NAME", "ALIASES", "TASK", "INPUTS", "PLUGIN"]
    assert [row.split()[0] for row in rows] == ["binary-sigmoid", "multiclass-softmax", "three-layer-stack"]
    assert "x: batch×10" in rows[2]


def test_list_pattern_and_json(run):
    assert run("list", "multi*").stdout.count("\n") == 2
    data = json.loads(run("list", "--json").stdout)
    binary = next(a for a in data if a["name"] == "binary-sigmoid")
    assert binary["aliases"] == ["binary"]
    assert binary["inputs"] == [{"name": "x", "shape": ["batch", "in_features"], "dtype": "float32", "range": None}]
    assert binary["parameters"]["hidden"] == {"type": "int,...", "default": [4, 3]}
    assert run("list", "nothing-like-this").stdout.startswith("no architecture matches")


def test_show_reports_layers_and_warnings(run):
    result = run("show", "multi", "--param", "n_classes=6")
    assert result.exit_code == 0
    out = result.stdout
    assert out.startswith("multiclass-softmax (alias multiclass), plugin seed")
    assert "x: float32 [2, 8]" in out and "probabilities: [2, 6]" in out
    assert "Softmax(dim=-1)" in out
    assert "parameter count: 75" in out  # (8*4+4) + (4*3+3) + (3*6+6)
    assert "the same as a single Linear(8,6)" in out


def test_show_warns_about_a_constant_softmax(run, zoo):
    """The notebook's model_with_softmax: Softmax over one output is the constant 1."""
    import zoo as zoo_api

    def softmax_over_one():
        from torch import nn

        return nn.Sequential(nn.Linear(5, 4), nn.Linear(4, 1), nn.Softmax(dim=-1))

    class Plugin:
        @zoo_api.hookimpl
        def register_architectures(self, register):
            register(zoo_api.Architecture("softmax-one", softmax_over_one, (zoo_api.Input("x", ("batch", 5)),), (zoo_api.Output("p"),)))

    from zoo.host.manager import load_zoo

    custom = load_zoo(entry_points=False, extra=[("nb", Plugin())])
    out = run("show", "softmax-one", zoo=custom).stdout
    assert "runs over a dimension of size 1: its output is constant" in out


def test_check_prints_loss_numbers(run):
    result = run("check", "binary")
    assert result.exit_code == 0, result.output
    assert "binary cross-entropy: torch 0.6" in result.stdout
    assert "closed form" in result.stdout and result.stdout.rstrip().endswith("ok")
    data = json.loads(run("check", "stack", "--json", "--seed", "4").stdout)
    assert data["ok"] and data["seed"] == 4 and data["losses"][0]["loss"] == "mean squared error"


def test_check_failure_exits_1(run):
    import zoo as zoo_api
    from zoo.host.manager import load_zoo

    def nan_model():
        import torch
        from torch import nn

        class Nan(nn.Module):
            def __init__(self):
                super().__init__()
                self.lin = nn.Linear(3, 1)

            def forward(self, x):
                return self.lin(x) * torch.nan

        return Nan()

    class Plugin:
        @zoo_api.hookimpl
        def register_architectures(self, register):
            register(zoo_api.Architecture("nan", nan_model, (zoo_api.Input("x", ("batch", 3)),), (zoo_api.Output("y", task="regression"),)))

    result = run("check", "nan", zoo=load_zoo(entry_points=False, extra=[("nan", Plugin())]))
    assert result.exit_code == 1
    assert "output 'y' has NaN or infinite values" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["check", "binry"], "unknown architecture 'binry'; did you mean binary"),
        (["check", "binary", "-p", "depth=3"], "binary-sigmoid has no parameter 'depth'; valid parameters: in_features"),
        (["check", "binary", "-p", "hidden=four"], "parameter hidden='four' is invalid: expected an integer"),
        (["check", "binary", "-p", "activation=swish"], "expected one of none, relu"),
        (["check", "binary", "-p", "oops"], "write it as KEY=VALUE"),
        (["show", "multi", "-p", "n_classes=1"], "use n_classes>=2"),
    ],
)
def test_usage_errors_are_one_line_exit_2(run, args, message):
    result = run(*args)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and message in result.stderr


def test_params_are_parsed_by_annotation(run):
    data = json.loads(run("check", "multi", "-p", "hidden=16,8", "-p", "activation=tanh", "-p", "n_classes=3", "--json").stdout)
    assert data["params"] == {"in_features": 8, "hidden": [16, 8], "n_classes": 3, "activation": "tanh"}
    assert data["outputs"]["probabilities"]["shape"] == [2, 3]


def test_plugins_lists_builtins(run):
    result = run("plugins")
    assert result.exit_code == 0
    assert [line.split()[:3] for line in result.stdout.splitlines()[1:6]] == [
        [name, "zoo-onnx", "(built-in)"] for name in ("tasks", "seed", "onnx", "onnxruntime_runtime", "openvino_runtime")
    ]
    assert "exporters: onnx" in result.stdout and "runtimes: onnxruntime" in result.stdout
    formats = result.stdout.split("\n\n")[1].splitlines()
    assert formats[0].split() == ["FORMAT", "SUFFIX", "PLUGIN", "OPTIONS", "SUMMARY"]
    assert formats[1].split()[:4] == ["onnx", ".onnx", "onnx", "--fold-linear"]
    assert formats[1].endswith("ONNX via torch.export (opset 20), verified with onnxruntime")
    data = json.loads(run("plugins", "--json").stdout)
    assert {p["name"]: p["status"] for p in data} == {
        "tasks": "ok", "seed": "ok", "onnx": "ok", "onnxruntime_runtime": "ok", "openvino_runtime": "ok"
    }


def test_plugins_json_has_each_plugins_formats(run, zoo):
    data = {p["name"]: p for p in json.loads(run("plugins", "--json").stdout)}
    assert data["seed"]["formats"] == [] and data["onnx"]["exporters"] == ["onnx"]  # the existing fields stay
    (onnx,) = data["onnx"]["formats"]
    exporter = zoo.exporter("onnx")
    assert onnx == {
        "name": "onnx",
        "suffix": ".onnx",
        "plugin": "onnx",
        "summary": exporter.summary,
        "options": ["fold_linear"],
        "variants": ["int8", "fp16"],
        "default_opset": exporter.default_opset,
        "opsets": list(exporter.opsets),
    }


def test_version_and_help(run):
    assert run("--version").stdout.strip() == f"zoo, version {__version__}"
    assert set(cli.commands) == {"list", "show", "check", "export", "bench", "verify", "plugins", "weights"}  # a new one gets help too
    for command in cli.commands:
        result = run(command, "--help")
        assert result.exit_code == 0 and "Examples:" in result.stdout, command


def option_help(command: str, name: str) -> str:
    (param,) = [p for p in cli.commands[command].params if p.name == name]
    return param.help


def test_tolerance_help_shows_every_default():
    from zoo.spec.architecture import DEFAULT_TOLERANCES

    text = option_help("export", "atol")
    for (device, dtype), tol in DEFAULT_TOLERANCES.items():
        assert dtype in text
        pair = "/".join(f"{value:.0e}".replace("e-0", "e-") for value in (tol.rtol, tol.atol))
        assert pair in text, (device, dtype, pair)
    assert "float64 1e-7/1e-9 on cpu" in text


def test_weights_help_lists_what_the_loader_accepts():
    from zoo.build.weights import SUFFIXES

    assert ".bin" in SUFFIXES  # the loader takes it, so the help must say so
    assert f"({', '.join(SUFFIXES)})" in option_help("export", "weights")


def test_output_and_opset_help_fit_every_format(zoo):
    output = option_help("export", "output")
    assert "./NAME.onnx" not in output and "./NAME plus the format's suffix" in output  # --format pt2 writes NAME.pt2
    onnx = zoo.exporter("onnx")  # what the help names is what the registered exporter does
    low, high = onnx.opsets
    assert f"onnx: default {onnx.default_opset}, {low}-{high}" in option_help("export", "opset")
