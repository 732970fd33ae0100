"""Specs refuse what cannot work at construction time; one bad architecture never stops --all."""

from __future__ import annotations

import json
import re

import pytest
from click.testing import CliRunner
from zoo.plugins.tasks import BUILTIN_TASKS

from zoo import Architecture, Dim, Exporter, Input, Output, hookimpl
from zoo.cli.commands import cli
from zoo.host.manager import load_zoo


def invoke(*args, zoo=None):
    return CliRunner().invoke(cli, [str(a) for a in args], obj=zoo, catch_exceptions=False)


def _linear(features: int = 4):
    from torch import nn

    return nn.Linear(features, 1)


X = Input("x", ("batch", "features"))


# -- finding 3: (task, head) pairs, and --all going on after any exception ---------------


@pytest.mark.parametrize(("task", "head"), [("regression", "softmax"), ("regression", "sigmoid"), ("binary", "softmax"), ("multiclass", "sigmoid"), ("multilabel", "softmax")])
def test_task_head_pairs_without_a_loss_are_refused_at_registration(task, head):
    class Pair:
        @hookimpl
        def register_architectures(self, register):
            register(Architecture(name="pair", build=_linear, inputs=(X,), outputs=(Output("y", task=task, head=head),)))

    zoo = load_zoo(entry_points=False, extra=[("pair", Pair())])
    (problem,) = zoo.problems
    assert f"output 'y': task {task!r} does not take head {head!r}" in problem
    assert zoo.architectures.get("pair") is None


def test_every_pair_in_the_table_builds_and_has_a_loss():
    from zoo.checking.task_calls import loss_name

    for task in BUILTIN_TASKS.values():
        for head in task.heads:
            assert loss_name(Output("y", task=task.name, head=head))
    assert Output("y", head="softmax").task is None  # no task: head checks only


class BadPair:
    @hookimpl
    def register_architectures(self, register):
        register(Architecture(name="bad-pair", build=_linear, inputs=(X,), outputs=(Output("y", task="regression", head="softmax"),)))


def test_a_bad_pair_is_a_plugin_problem_at_registration():
    zoo = load_zoo(entry_points=False, extra=[("badpair", BadPair())])
    (problem,) = [p for p in zoo.problems if p.startswith("plugin 'badpair'")]
    assert "does not take head 'softmax'" in problem
    assert zoo.architectures.get("bad-pair") is None


def _counts(features: int = 4):
    from torch import nn

    class Count(nn.Module):
        def forward(self, x):
            return (x > 0).sum(-1, keepdim=True)  # int64: torch has no MSE for it

    return Count()


class Counts:
    @hookimpl
    def register_architectures(self, register):
        register(Architecture(name="counts", build=_counts, inputs=(X,), outputs=(Output("n", task="regression"),)))


def test_export_all_goes_on_after_a_plugin_bug(tmp_path):
    zoo = load_zoo(entry_points=False, extra=[("buggy", Counts())])
    result = invoke("export", "--all", "-o", tmp_path, "--report", tmp_path / "r.json", zoo=zoo)
    assert result.exit_code == 1
    rows = {line.split()[0]: line.split()[1] for line in result.stdout.splitlines()[1:]}
    assert rows == {"binary-sigmoid": "ok", "multiclass-softmax": "ok", "three-layer-stack": "ok", "counts": "FAILED"}
    (failed,) = [r for r in json.loads((tmp_path / "r.json").read_text()) if r["status"] == "failed"]
    assert "plugin 'buggy'" in failed["error"] and "NotImplementedError" in failed["error"]
    assert "Traceback" not in result.output


# -- finding 8: names and suffixes that are safe as file names ---------------------------


@pytest.mark.parametrize("name", ["../x", "a/b", "..", ".hidden", "-rf", "Binary", "", "with space", "tab\t"])
def test_unsafe_architecture_names_and_aliases_are_refused(name):
    with pytest.raises(ValueError, match="not a valid name"):
        Architecture(name=name, build=_linear, inputs=(X,), outputs=(Output("y"),))
    with pytest.raises(ValueError, match="alias"):
        Architecture(name="fine", aliases=(name,), build=_linear, inputs=(X,), outputs=(Output("y"),))


def _never(*args):
    raise AssertionError("not called")


@pytest.mark.parametrize(("name", "suffix"), [("../onnx", ".onnx"), ("ONNX", ".onnx"), ("onnx", ""), ("onnx", "onnx"), ("onnx", "./x"), ("onnx", "./../x"), ("onnx", ".")])
def test_unsafe_exporter_names_and_suffixes_are_refused(name, suffix):
    with pytest.raises(ValueError, match="name|suffix"):
        Exporter(name=name, suffix=suffix, export=_never, load=_never, read_metadata=_never)


def test_existing_names_stay_valid(example_zoo):
    assert not example_zoo.problems
    names = [key for arch in example_zoo.architectures for key in (arch.name, *arch.aliases)]
    assert {"binary-sigmoid", "binary", "small-cnn", "cnn"} <= set(names)
    assert Exporter(name="wrong", suffix=".wrong.onnx", export=_never, load=_never, read_metadata=_never).suffix == ".wrong.onnx"


class Escaper:
    @hookimpl
    def register_architectures(self, register):
        register(Architecture(name="../escaped", build=_linear, inputs=(X,), outputs=(Output("y", task="regression"),)))


def test_a_path_name_is_a_plugin_problem_and_export_all_stays_in_its_folder(tmp_path):
    zoo = load_zoo(entry_points=False, extra=[("escaper", Escaper())])
    (problem,) = [p for p in zoo.problems if p.startswith("plugin 'escaper'")]
    assert "'../escaped' is not a valid name" in problem
    out = tmp_path / "out"
    out.mkdir()
    assert invoke("export", "--all", "-o", out, zoo=zoo).exit_code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


# -- a dimension is declared once (a Dim), and referred to by its plain name ------------


def _embed(vocab: int = 10):
    from torch import nn

    return nn.EmbeddingBag(vocab, 3)


def test_a_plain_name_refers_to_the_dim_declared_later_whatever_the_order():
    from zoo.build.shapes import dynamic_dims, verification_cases

    arch = Architecture(
        name="masked", build=_embed, outputs=(Output("y"),),
        inputs=(Input("mask", ("batch", "seq"), dtype="bool"), Input("ids", ("batch", Dim("seq", sample=4, max=16)), dtype="int64", range=(0, 10))),
    )
    assert dynamic_dims(arch, arch.defaults)["seq"] == Dim("seq", sample=4, max=16)  # was Dim("seq"): the mask came first
    sizes = [case["seq"] for case in verification_cases(arch, arch.defaults)]
    assert max(sizes) <= 16 and 4 in sizes


def test_two_different_declarations_of_one_dim_are_refused_at_registration():
    with pytest.raises(ValueError, match=r"dimension 'seq' is declared twice, differently: .*max=64.* in input 'ids' and .*max=32.* in input 'mask'; declare it once"):
        Architecture(
            name="clash", build=_embed, outputs=(Output("y"),),
            inputs=(Input("ids", ("batch", Dim("seq", max=64)), dtype="int64", range=(0, 10)), Input("mask", ("batch", Dim("seq", max=32)), dtype="bool")),
        )
    same = Dim("seq", max=64)  # the same declaration twice is no conflict
    Architecture(name="fine", build=_embed, outputs=(Output("y"),), inputs=(Input("ids", ("batch", same)), Input("mask", ("batch", Dim("seq", max=64)))))


def test_an_outputs_dim_declares_the_dimension_too_and_equal_meanings_are_no_conflict():
    from zoo.build.shapes import dynamic_dims

    arch = Architecture(name="out-dim", build=_linear, inputs=(X,), outputs=(Output("y", shape=(Dim("batch", max=5), 1)),))
    assert dynamic_dims(arch, arch.defaults)["batch"].max == 5
    with pytest.raises(ValueError, match=r"dimension 'batch' is declared twice, differently: .* in input 'x' and .* in output 'y'"):
        Architecture(name="clash", build=_linear, inputs=(Input("x", (Dim("batch", max=3), "features")),), outputs=(Output("y", shape=(Dim("batch", max=99), 1)),))
    same = Architecture(name="same", build=_linear, inputs=(Input("x", (Dim("batch"), "features")),), outputs=(Output("y", shape=(Dim("batch", sample=2), 1)),))
    assert dynamic_dims(same, same.defaults)["batch"].sample_size == 2


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Dim("seq", min=5, max=3), "Dim('seq'): max 3 is below min 5"),
        (lambda: Dim("seq", sample=10, max=3), "Dim('seq'): sample 10 must lie in [1, 3]"),
        (lambda: Dim("seq", min=0), "Dim('seq'): min must be a positive integer, got 0"),
        (lambda: Dim("seq", sample=2.5), "Dim('seq'): sample must be a positive integer, got 2.5"),
    ],
)
def test_a_dim_whose_sizes_contradict_each_other_is_refused_where_it_is_written(make, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        make()


def test_a_dims_default_sample_lies_in_its_range():
    assert (Dim("seq", max=4).sample_size, Dim("batch", min=16).sample_size, Dim("seq").sample_size) == (4, 16, 8)
