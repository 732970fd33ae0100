"""Verification that fits real models and real data: an architecture's own
inputs, the user's inputs, error statistics, where a file diverges, files zoo
did not write, and export failures that point at the user's line."""

from __future__ import annotations

import json
import math
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner
from torch import nn

import zoo
from zoo import Architecture, Dim, Input, Output
from zoo.build.model import build_model
from zoo.cli.commands import cli
from zoo.errors import PluginError
from zoo.host.manager import load_zoo
from zoo.verification.compare import error_stats


def invoke(*args, zoo=None):
    return CliRunner().invoke(cli, [str(a) for a in args], obj=zoo, catch_exceptions=False)


# -- a Transformer with a padding mask --------------------------------------------------


class PaddedEncoder(nn.Module):
    """nn.TransformerEncoder with src_key_padding_mask; classifies from the last token."""

    def __init__(self, vocab_size: int, d_model: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, d_model)
        layer = nn.TransformerEncoderLayer(d_model, 2, 2 * d_model, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2)
        self.head = nn.Linear(d_model, 3)

    def forward(self, tokens: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.embed(tokens), src_key_padding_mask=padding)[:, -1])


def padded_encoder(vocab_size: int = 50, d_model: int = 16) -> nn.Module:
    return PaddedEncoder(vocab_size, d_model)


def prefix_padding(sizes, generator, params):
    """Padding at the start of each row (True), at least one real token per row."""
    batch, seq = sizes["batch"], sizes["seq"]
    tokens = torch.randint(0, params["vocab_size"], (batch, seq), generator=generator)
    lengths = torch.randint(1, seq + 1, (batch,), generator=generator)
    return {"tokens": tokens, "padding": torch.arange(seq) < (seq - lengths).unsqueeze(1)}


ENCODER_INPUTS = (
    Input("tokens", ("batch", Dim("seq", sample=8)), dtype="int64", range=(0, "vocab_size")),
    Input("padding", ("batch", "seq"), dtype="bool"),
)


class EncoderPlugin:
    def __init__(self, **extra) -> None:
        self.arch = Architecture("padded-encoder", padded_encoder, ENCODER_INPUTS, (Output("logits", task="multiclass"),), **extra)

    @zoo.hookimpl
    def register_architectures(self, register):
        register(self.arch)


def test_a_padding_mask_transformer_fails_on_random_masks_and_verifies_with_its_sample_inputs(tmp_path):
    random_masks = load_zoo(entry_points=False, extra=[("encoder", EncoderPlugin())])
    result = invoke("export", "padded-encoder", "-o", tmp_path / "random.onnx", "--json", zoo=random_masks)
    # Random masks pad whole rows (half of them at seq=1): PyTorch's fused path
    # gives numbers there, onnxruntime NaN. No real batch has such rows.
    assert result.exit_code == 1 and not (tmp_path / "random.onnx").exists()
    record = json.loads(result.stdout)
    failed = [case for case in record["verification"]["cases"] if not case["ok"]]
    assert failed and all(case["sizes"]["seq"] == 1 for case in failed)
    stats = failed[0]["outputs"]["logits"]
    assert stats["nan"]["candidate"] > 0 and stats["nan"]["reference"] == 0
    assert stats["needed_atol"] is None and 0 < stats["out_of_tolerance"] < 1  # no atol passes a one-sided NaN
    assert stats["max_abs"] == "NaN" and record["verification"]["max_abs_error"] == "NaN"  # never hidden by a finite max
    assert "no atol would pass" in record["error"]

    realistic = load_zoo(entry_points=False, extra=[("encoder", EncoderPlugin(sample_inputs=prefix_padding))])
    result = invoke("export", "padded-encoder", "-o", tmp_path / "real.onnx", "--json", zoo=realistic)
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert len(record["verification"]["cases"]) == 6
    for case in record["verification"]["cases"]:
        stats = case["outputs"]["logits"]
        assert stats["ok"] and stats["abs_error"]["max"] < 1e-5 and stats["nan"] == {"reference": 0, "candidate": 0}


def bad_sample(kind):
    def make(sizes, generator, params):
        good = prefix_padding(sizes, generator, params)
        if kind == "missing":
            del good["padding"]
        elif kind == "dtype":
            good["padding"] = good["padding"].int()
        elif kind == "shape":
            good["tokens"] = good["tokens"][:, :1]
        elif kind == "raises":
            raise KeyError("seq_len")
        return good

    return make


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("missing", "returned ['tokens']; return a dict with exactly the inputs ['tokens', 'padding']"),
        ("dtype", "input 'padding' is int32, declared bool"),
        ("shape", "input 'tokens' has shape [2, 1], expected [2, 8] (batch=2, seq=8)"),
        ("raises", "raised KeyError: 'seq_len'"),
    ],
)
def test_what_sample_inputs_returns_is_checked_and_blamed_on_the_plugin(kind, message):
    arch = Architecture("padded-encoder", padded_encoder, ENCODER_INPUTS, (Output("logits"),), sample_inputs=bad_sample(kind), plugin="mine")
    with pytest.raises(PluginError) as caught:
        build_model(arch).sample_inputs()
    assert "architecture 'padded-encoder' (plugin 'mine'): sample_inputs" in str(caught.value)
    assert message in str(caught.value)


# -- the user's inputs ------------------------------------------------------------------


def test_an_npz_of_user_inputs_adds_a_verification_case_named_by_its_file(tmp_path):
    np.savez(tmp_path / "data.npz", x=np.random.default_rng(0).normal(size=(5, 10)).astype("float32"))
    result = invoke("export", "stack", "-o", tmp_path / "stack.onnx", "--inputs", tmp_path / "data.npz", "--report", tmp_path / "r.json")
    assert result.exit_code == 0, result.output
    assert "data.npz (batch=5)" in result.stdout
    cases = json.loads((tmp_path / "r.json").read_text())["verification"]["cases"]
    assert cases[-1]["source"] == "data.npz" and cases[-1]["sizes"] == {"batch": 5} and cases[-1]["ok"]
    assert all("source" not in case for case in cases[:-1])
    verified = invoke("verify", tmp_path / "stack.onnx", "--inputs", tmp_path / "data.npz", "--inputs", tmp_path / "data.npz")
    assert verified.exit_code == 0 and verified.stdout.count("data.npz (batch=5)") == 2


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"x": np.zeros((2, 10), "float32"), "y": np.zeros(2)}, "unknown key(s) y; its keys must be three-layer-stack's inputs: x (and, for labels, its outputs: prediction)"),
        ({"z": np.zeros((2, 10), "float32")}, "unknown key(s) z; missing x"),
        ({"x": np.zeros((2, 10))}, "'x' is float64, three-layer-stack takes float32; convert it with .astype('float32')"),
        ({"x": np.zeros(10, "float32")}, "'x' has 1 dimensions [10], three-layer-stack takes 2 (batch×in_features)"),
        ({"x": np.zeros((2, 9), "float32")}, "'x' has size 9 on axis 1, three-layer-stack takes in_features=10 there (batch×in_features)"),
        ({"x": np.array([object()] * 2)}, "could not be read without running code"),
        ({"x": np.zeros((0, 10), "float32")}, "'x' has batch=0 on axis 0, three-layer-stack takes batch of at least 1 (batch×in_features)"),
    ],
)
def test_a_wrong_npz_is_a_usage_error_before_any_model_is_built(tmp_path, arrays, message):
    np.savez(tmp_path / "bad.npz", **arrays)
    result = invoke("export", "stack", "-o", tmp_path / "stack.onnx", "--inputs", tmp_path / "bad.npz")
    assert result.exit_code == 2
    assert result.stderr.startswith("zoo: error: --inputs bad.npz") and message in result.stderr
    assert "Traceback" not in result.output and not (tmp_path / "stack.onnx").exists()


def test_npz_sizes_must_lie_in_the_dims_range(tmp_path):
    capped = Architecture("capped", lambda: nn.Linear(4, 2), (Input("x", ("batch", Dim("seq", sample=4, max=8), 4)),), (Output("y"),))

    class Plugin:
        @zoo.hookimpl
        def register_architectures(self, register):
            register(capped)

    the_zoo = load_zoo(entry_points=False, extra=[("capped", Plugin())])
    np.savez(tmp_path / "long.npz", x=np.zeros((2, 9, 4), "float32"))
    result = invoke("export", "capped", "-o", tmp_path / "c.onnx", "--inputs", tmp_path / "long.npz", zoo=the_zoo)
    assert result.exit_code == 2 and not (tmp_path / "c.onnx").exists()
    assert result.stderr == "zoo: error: --inputs long.npz: 'x' has seq=9 on axis 1, capped takes seq from 1 to 8 (batch×seq×4)\n"


def test_npz_integers_must_lie_in_the_inputs_range(tmp_path):
    # a token id past the vocabulary was the model's IndexError, after building and checking it
    the_zoo = load_zoo(entry_points=False, extra=[("encoder", EncoderPlugin())])
    np.savez(tmp_path / "ids.npz", tokens=np.array([[1, 2, 77, 3]], "int64"), padding=np.zeros((1, 4), bool))
    result = invoke("export", "padded-encoder", "-o", tmp_path / "e.onnx", "--inputs", tmp_path / "ids.npz", zoo=the_zoo)
    assert result.exit_code == 2 and not (tmp_path / "e.onnx").exists()
    assert result.stderr == (
        "zoo: error: --inputs ids.npz: 'tokens' holds 77 at [0, 2], outside [0, 50) that padded-encoder takes "
        "(range=(0, 'vocab_size'), vocab_size=50); give values in that range, or build with --param vocab_size=78 or more\n"
    )
    np.savez(tmp_path / "negative.npz", tokens=np.array([[1, -1]], "int64"), padding=np.zeros((1, 2), bool))
    result = invoke("export", "padded-encoder", "-p", "vocab_size=100", "-o", tmp_path / "e.onnx", "--inputs", tmp_path / "negative.npz", zoo=the_zoo)
    assert result.exit_code == 2 and "'tokens' holds -1 at [0, 1], outside [0, 100)" in result.stderr
    assert "--param" not in result.stderr  # a larger vocabulary would not help
    np.savez(tmp_path / "two.npz", tokens=np.array([[60, 2, 90]], "int64"), padding=np.zeros((1, 3), bool))
    result = invoke("export", "padded-encoder", "-o", tmp_path / "e.onnx", "--inputs", tmp_path / "two.npz", zoo=the_zoo)
    assert "'tokens' holds 60 at [0, 0]" in result.stderr and "--param vocab_size=91 or more" in result.stderr  # one try takes them all
    np.savez(tmp_path / "both.npz", tokens=np.array([[60, -1]], "int64"), padding=np.zeros((1, 2), bool))
    result = invoke("export", "padded-encoder", "-o", tmp_path / "e.onnx", "--inputs", tmp_path / "both.npz", zoo=the_zoo)
    assert "'tokens' holds 60 at [0, 0]" in result.stderr and "--param" not in result.stderr  # -1 stays outside any vocabulary
    np.savez(tmp_path / "scalar.npz", tokens=np.array(99), padding=np.zeros((1, 3), bool))
    result = invoke("export", "padded-encoder", "-o", tmp_path / "e.onnx", "--inputs", tmp_path / "scalar.npz", zoo=the_zoo)
    assert "'tokens' has 0 dimensions" in result.stderr  # its shape is what is wrong first


def test_verifying_a_file_on_out_of_range_integers_suggests_no_param_it_cannot_take(tmp_path):
    the_zoo = load_zoo(entry_points=False, extra=[("encoder", EncoderPlugin(sample_inputs=prefix_padding))])
    assert invoke("export", "padded-encoder", "-o", tmp_path / "e.onnx", zoo=the_zoo).exit_code == 0
    np.savez(tmp_path / "ids.npz", tokens=np.array([[1, 2, 77, 3]], "int64"), padding=np.zeros((1, 4), bool))
    result = invoke("verify", tmp_path / "e.onnx", "--inputs", tmp_path / "ids.npz", zoo=the_zoo)
    assert result.exit_code == 2
    assert result.stderr.endswith("outside [0, 50) that padded-encoder takes (range=(0, 'vocab_size'), vocab_size=50); give values in that range\n")


def test_static_shapes_take_npz_inputs_of_the_sample_sizes_only(tmp_path):
    np.savez(tmp_path / "five.npz", x=np.zeros((5, 8), "float32"))
    np.savez(tmp_path / "two.npz", x=np.ones((2, 8), "float32"))
    message = "'x' has batch=5 on axis 0, but with static shapes binary-sigmoid takes batch=2 only (batch×in_features)"
    refused = invoke("export", "binary", "--static", "-o", tmp_path / "b.onnx", "--inputs", tmp_path / "five.npz")
    assert refused.exit_code == 2 and message in refused.stderr and not (tmp_path / "b.onnx").exists()  # before any export
    assert invoke("export", "binary", "--static", "-o", tmp_path / "b.onnx", "--inputs", tmp_path / "two.npz").exit_code == 0
    verified = invoke("verify", tmp_path / "b.onnx", "--inputs", tmp_path / "five.npz")
    assert verified.exit_code == 2 and message in verified.stderr  # the file's metadata says static


# -- error statistics and tolerances per output ------------------------------------------


def test_error_stats_counts_nan_as_nan_and_gives_the_atol_that_would_pass():
    ref = np.array([1.0, 2.0, np.nan, np.inf, 4.0])
    got = np.array([1.1, 2.0, np.nan, np.inf, 4.0])
    stats = error_stats(ref, got, rtol=0.0, atol=0.0)
    assert stats["nan"] == {"reference": 1, "candidate": 1} and stats["inf"] == {"reference": 1, "candidate": 1}
    assert math.isclose(stats["needed_atol"], 0.1) and stats["out_of_tolerance"] == pytest.approx(0.2)
    assert math.isclose(stats["abs_error"]["max"], 0.1) and stats["abs_error"]["p50"] == 0.0
    assert error_stats(ref, got, rtol=0.0, atol=stats["needed_atol"])["ok"]  # needed_atol passes, exactly
    assert not error_stats(ref, got, rtol=0.0, atol=0.0999)["ok"]
    assert math.isclose(error_stats(ref, got, rtol=0.05, atol=0.0)["needed_atol"], 0.05)  # |a-b| - rtol*|ref|
    one_sided = error_stats(np.array([1.0, 2.0]), np.array([1.0, np.nan]), rtol=0.0, atol=1.0)
    assert not one_sided["ok"] and one_sided["needed_atol"] is None and one_sided["nan"] == {"reference": 0, "candidate": 1}
    assert one_sided["one_sided"] == 1 and math.isnan(one_sided["abs_error"]["max"])


def test_tolerances_per_output_and_an_unknown_output_is_a_usage_error(tmp_path):
    result = invoke("export", "stack", "-o", tmp_path / "s.onnx", "--atol", "logits=1e-3")
    assert result.exit_code == 2
    assert "--atol logits=...: the model has no output 'logits'; its outputs are prediction" in result.stderr
    result = invoke("export", "stack", "-o", tmp_path / "s.onnx", "--atol", "prediction=1e-3", "--rtol", "0", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["verification"]["tolerances"] == {"prediction": {"rtol": 0.0, "atol": 1e-3}}


# -- where a file diverges --------------------------------------------------------------


def tamper(path: Path, initializer: str, out: Path) -> None:
    model = onnx.load(path)
    tensor = next(t for t in model.graph.initializer if t.name == initializer)
    values = onnx.numpy_helper.to_array(tensor).copy()
    values.flat[0] += 0.5
    tensor.CopyFrom(onnx.numpy_helper.from_array(values, initializer))
    onnx.save(model, out)


def test_a_tampered_weight_is_reported_at_its_node_and_module(tmp_path):
    assert invoke("export", "stack", "-o", tmp_path / "stack.onnx").exit_code == 0
    tamper(tmp_path / "stack.onnx", "1.weight", tmp_path / "tampered.onnx")  # the second Linear, metadata kept
    result = invoke("verify", tmp_path / "tampered.onnx", "--report", tmp_path / "r.json")
    assert result.exit_code == 1
    assert "first divergence at node 'node_linear_1' (module 1, Gemm): max abs" in result.stderr
    found = json.loads((tmp_path / "r.json").read_text())["verification"]["first_divergence"]
    assert (found["node"], found["module"], found["op"], found["class"]) == ("node_linear_1", "1", "Gemm", "Linear")
    assert found["max_abs"] > 1e-3
    assert "first_divergence" not in json.loads(invoke("verify", tmp_path / "stack.onnx", "--json").stdout)["verification"]


# -- any ONNX file ------------------------------------------------------------------------


def strip(path: Path, out: Path) -> None:
    """What another tool might write: no zoo metadata, other input and output names."""
    model = onnx.load(path)
    del model.metadata_props[:]
    renames = {model.graph.input[0].name: "input_0", model.graph.output[0].name: "output_0"}
    for value in [*model.graph.input, *model.graph.output]:
        value.name = renames.get(value.name, value.name)
    for node in model.graph.node:
        node.input[:] = [renames.get(n, n) for n in node.input]
        node.output[:] = [renames.get(n, n) for n in node.output]
    onnx.save(model, out)


def test_an_onnx_file_without_metadata_verifies_with_arch_and_a_tampered_one_fails(tmp_path):
    assert invoke("export", "stack", "-p", "width=12", "--seed", "3", "-o", tmp_path / "stack.onnx").exit_code == 0
    strip(tmp_path / "stack.onnx", tmp_path / "foreign.onnx")
    result = invoke("verify", tmp_path / "foreign.onnx")
    assert result.exit_code == 2 and "has no zoo metadata" in result.stderr and "pass --arch NAME" in result.stderr
    result = invoke("verify", tmp_path / "stack.onnx", "--seed", "3")  # the file's own metadata says how to build it
    assert result.exit_code == 2 and "--param and --seed say how to build --arch NAME" in result.stderr
    result = invoke("verify", tmp_path / "foreign.onnx", "--arch", "stack", "-p", "width=12", "--seed", "3")
    assert result.exit_code == 0, result.output
    assert "verify three-layer-stack" in result.stdout and result.stdout.rstrip().endswith("ok")
    wrong_seed = invoke("verify", tmp_path / "foreign.onnx", "--arch", "stack", "-p", "width=12")
    assert wrong_seed.exit_code == 1 and "if the file holds trained weights, pass them with --weights" in wrong_seed.stderr
    tamper(tmp_path / "foreign.onnx", "2.bias", tmp_path / "tampered.onnx")
    result = invoke("verify", tmp_path / "tampered.onnx", "--arch", "stack", "-p", "width=12", "--seed", "3")
    assert result.exit_code == 1 and "output 'prediction' differs from PyTorch" in result.stderr
    assert "(module 2, Gemm)" in result.stderr


def test_arch_that_cannot_match_the_files_outputs_is_a_usage_error(tmp_path, example_zoo):
    assert invoke("export", "stack", "-o", tmp_path / "stack.onnx").exit_code == 0
    result = invoke("verify", tmp_path / "stack.onnx", "--arch", "listing", zoo=example_zoo)
    assert result.exit_code == 2
    assert "stack.onnx has 1 inputs (x) but listing-model declares 2 (numeric, category)" in result.stderr


# -- export failures point at the user's code -------------------------------------------

BRANCHY = '''\
import torch
from torch import nn

import zoo
from zoo import Architecture, Input, Output


class Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 2)

    def forward(self, x):
        if x.sum() > 0:
            return self.linear(x)
        return -self.linear(x)


@zoo.hookimpl
def register_architectures(register):
    register(Architecture("branchy", Branchy, (Input("x", ("batch", 4)),), (Output("y"),)))
'''


def test_an_unexportable_forward_is_reported_at_its_own_file_and_line(tmp_path, monkeypatch):
    folder = tmp_path / "plugin"
    folder.mkdir()
    (folder / "branchy_nets.py").write_text(textwrap.dedent(BRANCHY))
    monkeypatch.syspath_prepend(str(folder))
    import branchy_nets

    the_zoo = load_zoo(entry_points=False, extra=[("branchy", branchy_nets)])
    result = invoke("export", "branchy", "-o", tmp_path / "b.onnx", zoo=the_zoo)
    assert result.exit_code == 1
    line = result.stderr.strip()
    assert line.startswith("zoo: error: onnx could not export branchy: GuardOnDataDependentSymNode")
    assert " at branchy_nets.py:14: if x.sum() > 0 " in line and len(result.stderr.splitlines()) == 1


def test_nan_on_one_side_is_never_counted_as_an_agreeing_decision() -> None:
    import numpy as np

    from zoo.checking.task_calls import agreement
    from zoo.spec.architecture import Output

    ref = np.array([[0.1, 0.9], [0.8, 0.2]])
    cand = np.array([[np.nan, np.nan], [0.8, 0.2]])
    assert agreement(Output("p", task="multiclass", head="softmax"), ref, cand, 1e-4, 1e-5) == ("argmax", 0.5)
    probs = np.array([[0.9], [0.1]])
    assert agreement(Output("q", task="binary", head="sigmoid"), probs, np.array([[np.nan], [0.1]]), 1e-4, 1e-5) == ("threshold", 0.5)


def test_report_never_replaces_an_inputs_file(run, tmp_path) -> None:
    import numpy as np

    np.savez(tmp_path / "data.npz", x=np.zeros((3, 8), np.float32))
    result = run("export", "binary", "--inputs", "data.npz", "--report", "data.npz")
    assert result.exit_code == 2 and "would overwrite" in result.stderr
    assert np.load(tmp_path / "data.npz")["x"].shape == (3, 8)
