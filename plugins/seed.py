"""The networks of the user's PyTorch notebook.

The defaults rebuild the notebook's ``nn.Sequential`` models layer for layer, so
a state dict saved from the notebook loads as it is. Parameters go further:
input width, hidden sizes, classes, and an activation between hidden layers
(the notebook has none, so its Linear layers collapse to one affine map).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import zoo
from zoo import Architecture, Input, Output, ParameterError

if TYPE_CHECKING:
    from torch import nn

Activation = Literal["none", "relu", "tanh", "sigmoid", "gelu", "leaky_relu"]


def linear_stack(
    in_features: int, hidden: tuple[int, ...], out_features: int, activation: str, head: str | None
) -> nn.Sequential:
    """Linear layers of the given widths, an optional activation between them, then the head."""
    from torch import nn

    widths = (in_features, *hidden, out_features)
    bad = [w for w in widths if w < 1]
    if bad:
        raise ParameterError(f"layer sizes must be positive integers, got {','.join(map(str, widths))}")
    layers: list[nn.Module] = []
    for index, (fan_in, fan_out) in enumerate(zip(widths, widths[1:])):
        if index and activation != "none":
            layers.append(_activation(activation))
        layers.append(nn.Linear(fan_in, fan_out))
    if head == "sigmoid":
        layers.append(nn.Sigmoid())
    elif head == "softmax":
        layers.append(nn.Softmax(dim=-1))
    return nn.Sequential(*layers)


def _activation(name: str) -> nn.Module:
    from torch import nn

    return {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "gelu": nn.GELU, "leaky_relu": nn.LeakyReLU}[name]()


def binary_sigmoid(in_features: int = 8, hidden: tuple[int, ...] = (4, 3), activation: Activation = "none") -> nn.Module:
    return linear_stack(in_features, hidden, 1, activation, head="sigmoid")


def multiclass_softmax(
    in_features: int = 8, hidden: tuple[int, ...] = (4, 3), n_classes: int = 4, activation: Activation = "none"
) -> nn.Module:
    if n_classes < 2:
        raise ParameterError(f"n_classes={n_classes}: a softmax over fewer than 2 classes is the constant 1; use n_classes>=2")
    return linear_stack(in_features, hidden, n_classes, activation, head="softmax")


def three_layer_stack(
    in_features: int = 10,
    hidden: tuple[int, ...] = (18, 20),
    out_features: int = 5,
    activation: Activation = "none",
    width: int | None = None,
) -> nn.Module:
    """``width`` sets every hidden layer to that size (for large-model exports)."""
    if width is not None:
        hidden = (width,) * len(hidden)
    return linear_stack(in_features, hidden, out_features, activation, head=None)


@zoo.hookimpl
def register_architectures(register):
    # Summaries name the family and label sizes as defaults: -p changes the
    # sizes, and 'zoo show' lists the layers actually built.
    features = Input("x", ("batch", "in_features"))
    register(
        Architecture(
            name="binary-sigmoid",
            aliases=("binary",),
            summary="Linear stack → Sigmoid: binary classifier (defaults 8→4→3→1)",
            build=binary_sigmoid,
            inputs=(features,),
            outputs=(Output("probability", task="binary", head="sigmoid", shape=("batch", 1)),),
        )
    )
    register(
        Architecture(
            name="multiclass-softmax",
            aliases=("multiclass",),
            summary="Linear stack → Softmax: multiclass classifier (defaults 8→4→3→4)",
            build=multiclass_softmax,
            inputs=(features,),
            outputs=(Output("probabilities", task="multiclass", head="softmax", shape=("batch", "n_classes")),),
        )
    )
    register(
        Architecture(
            name="three-layer-stack",
            aliases=("stack",),
            summary="Linear stack: regression (defaults 10→18→20→5)",
            build=three_layer_stack,
            inputs=(features,),
            outputs=(Output("prediction", task="regression", shape=("batch", "out_features")),),
        )
    )
