"""An example third-party zoo plugin.

Installed, it is found through its ``[project.entry-points.zoo]`` entry and adds:

- ``small-cnn``: images ``batch×3×height×width`` (height and width are build parameters);
- ``token-classifier``: int64 token ids ``batch×seq`` in ``[0, vocab_size)`` and a
  padding mask, dynamic ``seq``; its ``sample_inputs`` pads like a tokenizer;
- ``listing-model``: two named inputs and two named outputs;
- ``tag-model``: independent labels per row (the ``multilabel`` task);
- ``digits``: trained weights for the seed plugin's ``multiclass-softmax``, with the
  accuracy they claim on a held-out split (``zoo_example_plugin.weights``);
- the ``pt2`` export format (a ``torch.export`` program archive);
- the ``pt2-info`` command.

It uses only zoo's public API (``import zoo``). torch is imported inside the
functions that need it, so ``zoo list`` does not load it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import zoo
from zoo import Architecture, Dim, Input, Output, ParameterError

if TYPE_CHECKING:
    from torch import nn

__version__ = "0.1.0"


def small_cnn(height: int = 32, width: int = 32, channels: int = 8, n_classes: int = 10) -> nn.Module:
    from zoo_example_plugin.nets import SmallCNN

    if min(height, width) < 2:
        raise ParameterError(f"height={height}, width={width}: the first pooling layer needs images of at least 2×2")
    if channels < 1 or n_classes < 2:
        raise ParameterError("channels must be >= 1 and n_classes >= 2")
    return SmallCNN(channels, n_classes)


def token_classifier(vocab_size: int = 1000, embed_dim: int = 32, heads: int = 4, n_classes: int = 5) -> nn.Module:
    from zoo_example_plugin.nets import TokenClassifier

    if embed_dim % heads:
        raise ParameterError(f"embed_dim={embed_dim} must be divisible by heads={heads}")
    if vocab_size < 1 or n_classes < 2:
        raise ParameterError("vocab_size must be >= 1 and n_classes >= 2")
    return TokenClassifier(vocab_size, embed_dim, heads, n_classes)


def sample_token_batch(sizes: dict[str, int], generator, params: dict) -> dict:
    from zoo_example_plugin.nets import padded_tokens

    return padded_tokens(sizes, generator, params)


def listing_model(n_features: int = 6, n_categories: int = 12, hidden: int = 16) -> nn.Module:
    from zoo_example_plugin.nets import ListingModel

    if min(n_features, n_categories, hidden) < 1:
        raise ParameterError("n_features, n_categories and hidden must be positive")
    return ListingModel(n_features, n_categories, hidden)


def tag_model(n_features: int = 12, hidden: int = 32, n_labels: int = 6) -> nn.Module:
    from torch import nn

    if min(n_features, hidden, n_labels) < 1:
        raise ParameterError("n_features, hidden and n_labels must be positive")
    return nn.Sequential(nn.Linear(n_features, hidden), nn.ReLU(), nn.Linear(hidden, n_labels))


def gru_regressor(n_features: int = 4, hidden: int = 16, n_outputs: int = 2) -> nn.Module:
    from zoo_example_plugin.nets import SequenceRegressor

    if min(n_features, hidden, n_outputs) < 1:
        raise ParameterError("n_features, hidden and n_outputs must be positive")
    return SequenceRegressor(n_features, hidden, n_outputs)


@zoo.hookimpl
def register_architectures(register):
    register(
        Architecture(
            name="small-cnn",
            aliases=("cnn",),
            summary="Conv-BN-ReLU-MaxPool ×2 → global pool → Linear: image classifier (logits)",
            build=small_cnn,
            # "height" and "width" are build parameters, so they are fixed in the
            # exported graph; "batch" is not, so it stays dynamic.
            inputs=(Input("image", ("batch", 3, "height", "width")),),
            outputs=(Output("logits", task="multiclass", shape=("batch", "n_classes")),),
        )
    )
    register(
        Architecture(
            name="token-classifier",
            aliases=("text",),
            summary="Embedding → self-attention encoder → mean pool → log_softmax: text classifier",
            build=token_classifier,
            # seq is exported at 12 and verified from 2 up to 64 tokens. padding is
            # True where a row is padded; sample_inputs makes realistic masks.
            inputs=(
                Input("tokens", ("batch", Dim("seq", sample=12, min=2, max=64)), dtype="int64", range=(0, "vocab_size")),
                Input("padding", ("batch", "seq"), dtype="bool"),
            ),
            outputs=(Output("log_probs", task="multiclass", head="log_softmax", shape=("batch", "n_classes")),),
            sample_inputs=sample_token_batch,
        )
    )
    register(
        Architecture(
            name="listing-model",
            aliases=("listing",),
            summary="numeric features + category id → P(sold) and price: two inputs, two outputs",
            build=listing_model,
            inputs=(
                Input("numeric", ("batch", "n_features"), range=(-1.0, 1.0)),
                Input("category", ("batch",), dtype="int64", range=(0, "n_categories")),
            ),
            outputs=(
                Output("sold", task="binary", head="sigmoid", shape=("batch", 1)),
                Output("price", task="regression", shape=("batch", 1)),
            ),
        )
    )
    register(
        Architecture(
            name="tag-model",
            aliases=("tags",),
            summary="MLP → one logit per label: multilabel tagger (any number of labels per row)",
            build=tag_model,
            inputs=(Input("features", ("batch", "n_features")),),
            # multilabel: BCE per label; verification compares every label's
            # decision and reports the rows whose label sets match exactly
            outputs=(Output("tag_logits", task="multilabel", shape=("batch", "n_labels")),),
        )
    )
    register(
        Architecture(
            name="gru-regressor",
            aliases=("gru",),
            summary="GRU over a time series → last step → Linear: sequence regression",
            build=gru_regressor,
            # the series length stays dynamic: exported at 10 steps, verified from 1 to 21
            inputs=(Input("series", ("batch", Dim("steps", sample=10), "n_features")),),
            outputs=(Output("forecast", task="regression", shape=("batch", "n_outputs")),),
        )
    )


@zoo.hookimpl
def register_exporters(register):
    from zoo_example_plugin import pt2

    register(pt2.EXPORTER)


@zoo.hookimpl
def register_weights(register):
    from zoo_example_plugin.weights import register_weights as register_digits

    register_digits(register)


@zoo.hookimpl
def register_commands(cli):
    from zoo_example_plugin.commands import pt2_info

    cli.add_command(pt2_info)
