"""The notebook's networks: structure, shapes, losses, parameters."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from zoo.build.model import build_model
from zoo.checking.checks import check_model
from zoo.checking.task_calls import closed_form_loss, torch_loss
from zoo.errors import ParameterError
from zoo.spec.architecture import Output


def layers(module):
    return [(type(m).__name__, getattr(m, "in_features", None), getattr(m, "out_features", None)) for m in module]


def test_defaults_rebuild_the_notebook(zoo):
    binary = build_model(zoo.architecture("binary")).module
    multiclass = build_model(zoo.architecture("multiclass")).module
    stack = build_model(zoo.architecture("stack")).module
    assert layers(binary) == [("Linear", 8, 4), ("Linear", 4, 3), ("Linear", 3, 1), ("Sigmoid", None, None)]
    assert layers(multiclass) == [("Linear", 8, 4), ("Linear", 4, 3), ("Linear", 3, 4), ("Softmax", None, None)]
    assert multiclass[3].dim == -1
    assert layers(stack) == [("Linear", 10, 18), ("Linear", 18, 20), ("Linear", 20, 5)]


def test_notebook_state_dict_loads_unchanged(zoo, tmp_path):
    """A model trained in the notebook (same nn.Sequential) loads into the zoo's build."""
    notebook = nn.Sequential(nn.Linear(8, 4), nn.Linear(4, 3), nn.Linear(3, 1), nn.Sigmoid())
    torch.save(notebook.state_dict(), tmp_path / "nb.pt")
    built = build_model(zoo.architecture("binary"), weights=tmp_path / "nb.pt")
    x = torch.tensor([[3, 4, 6, 2, 3, 6, 8, 9]], dtype=torch.float32)
    assert torch.equal(built.module(x), notebook(x))


@pytest.mark.parametrize("name", ["binary-sigmoid", "multiclass-softmax", "three-layer-stack"])
def test_check_passes_with_numbers(zoo, name):
    result = check_model(build_model(zoo.architecture(name)))
    assert result.ok, result.failures
    (loss,) = result.losses
    assert np.isfinite(loss.torch) and loss.torch > 0
    assert loss.torch == pytest.approx(loss.closed_form, rel=1e-5)
    assert result.gradients["checked"] and result.gradients["parameters"] == 6
    assert not result.gradients["no_grad"] and not result.gradients["non_finite"]


def test_seed_cross_entropy_number():
    """The notebook: CrossEntropyLoss([-0.121, 0.1059], one-hot [1, 0]) = 0.8130."""
    logits = Output("scores", task="multiclass")
    scores = torch.tensor([[-0.121, 0.1059]], dtype=torch.float64)
    target = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    assert torch_loss(logits, scores, target).item() == pytest.approx(0.8130, abs=5e-5)
    assert closed_form_loss(logits, scores.numpy(), target.numpy()) == pytest.approx(0.8130, abs=5e-5)


def test_softmax_head_loss_takes_log_probabilities_once():
    """On a softmax head the loss is -sum(t log p): a second softmax would give another number."""
    probs = Output("p", task="multiclass", head="softmax")
    p = torch.tensor([[0.7, 0.2, 0.1]])
    t = torch.tensor([[1.0, 0.0, 0.0]])
    assert torch_loss(probs, p, t).item() == pytest.approx(-np.log(0.7), rel=1e-6)
    double_softmax = torch.nn.functional.cross_entropy(p, t).item()
    assert abs(double_softmax - (-np.log(0.7))) > 0.1


def test_binary_loss_on_logits_and_probabilities_agree():
    z = torch.tensor([[0.3], [-1.2], [2.0]])
    t = torch.tensor([[1.0], [0.0], [1.0]])
    on_logits = torch_loss(Output("z", task="binary"), z, t).item()
    on_probs = torch_loss(Output("p", task="binary", head="sigmoid"), torch.sigmoid(z), t).item()
    assert on_logits == pytest.approx(on_probs, rel=1e-6)
    assert closed_form_loss(Output("z", task="binary"), z.numpy(), t.numpy()) == pytest.approx(on_logits, rel=1e-6)


def test_parameters_go_further(zoo):
    arch = zoo.architecture("multiclass")
    built = build_model(arch, {"in_features": 16, "hidden": (32, 32, 8), "n_classes": 10, "activation": "relu"})
    kinds = [type(m).__name__ for m in built.module]
    assert kinds == ["Linear", "ReLU", "Linear", "ReLU", "Linear", "ReLU", "Linear", "Softmax"]
    out = built.forward(built.sample_inputs({"batch": 5}))
    assert list(out["probabilities"].shape) == [5, 10]
    result = check_model(built)
    assert result.ok and not result.warnings  # relu breaks the affine chain


def test_width_sets_every_hidden_layer(zoo):
    built = build_model(zoo.architecture("stack"), {"width": 7})
    assert layers(built.module) == [("Linear", 10, 7), ("Linear", 7, 7), ("Linear", 7, 5)]


@pytest.mark.parametrize(("name", "params"), [("multiclass", {"n_classes": 1}), ("binary", {"hidden": (4, 0)}), ("stack", {"in_features": -3})])
def test_degenerate_sizes_are_refused(zoo, name, params):
    with pytest.raises(ParameterError):
        build_model(zoo.architecture(name), params)


def test_same_seed_same_weights(zoo):
    arch = zoo.architecture("stack")
    a, b, c = (build_model(arch, seed=s).module.state_dict() for s in (1, 1, 2))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["0.weight"], c["0.weight"])


@pytest.mark.parametrize("name", ["binary-sigmoid", "multiclass-softmax", "three-layer-stack"])
def test_summary_sizes_are_the_defaults_and_labelled_so(zoo, name):
    arch = zoo.architecture(name)
    defaults = arch.summary.rsplit("(defaults ", 1)[1].rstrip(")")
    linears = [m for m in build_model(arch).module if isinstance(m, nn.Linear)]
    assert defaults == "→".join(str(w) for w in [linears[0].in_features, *(m.out_features for m in linears)])


def test_show_with_parameters_does_not_contradict_the_summary(run):
    shown = run("show", "multiclass", "-p", "n_classes=10").stdout
    assert "4-class" not in shown and "multiclass classifier (defaults" in shown
    assert "Linear(in_features=3, out_features=10, bias=True)" in shown
