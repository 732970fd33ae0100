"""The example's networks. This module imports torch at the top, so the plugin's
``__init__`` only imports it inside ``build`` callables: ``zoo list`` stays fast."""

from __future__ import annotations

import torch
from torch import nn


class SmallCNN(nn.Module):
    """Two conv blocks (Conv → BatchNorm → ReLU → MaxPool), global average pool, linear classifier."""

    def __init__(self, channels: int, n_classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, channels, 3, padding=1),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(channels, 2 * channels, 3, padding=1),
            nn.BatchNorm2d(2 * channels),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
        )
        self.classifier = nn.Linear(2 * channels, n_classes)
        # A fresh BatchNorm has running mean 0 and variance 1, so in eval mode it is
        # the identity and an export that dropped it would still verify. Random
        # statistics (seeded by zoo like every initial weight) make it count.
        for module in self.features:
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                nn.init.uniform_(module.weight, 0.5, 1.5)
                nn.init.uniform_(module.bias, -0.5, 0.5)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(image).flatten(1))  # logits


class TokenClassifier(nn.Module):
    """Embedding → one Transformer encoder layer (self-attention, padding masked) →
    mean over the real tokens → log-probabilities.

    Attention rather than a GRU: torch.export unrolls recurrent layers over the
    sample's sequence length, which would fix ``seq`` in the exported graph.
    """

    def __init__(self, vocab_size: int, embed_dim: int, heads: int, n_classes: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed_dim)
        self.encoder = nn.TransformerEncoderLayer(embed_dim, heads, dim_feedforward=2 * embed_dim, dropout=0.0, batch_first=True)
        self.classifier = nn.Linear(embed_dim, n_classes)

    def forward(self, tokens: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(self.embed(tokens), src_key_padding_mask=padding)
        real = (~padding).unsqueeze(-1)
        pooled = torch.where(real, hidden, 0.0).sum(dim=1) / real.sum(dim=1).clamp(min=1)
        return torch.log_softmax(self.classifier(pooled), dim=-1)


def padded_tokens(sizes: dict[str, int], generator: torch.Generator, params: dict) -> dict[str, torch.Tensor]:
    """Token ids and a padding mask as a tokenizer makes them: each row padded at
    the start (``True`` = padding) and at least one real token long. Random
    masks would pad whole rows, which no real batch has, and whose outputs
    PyTorch and onnxruntime compute differently (NaN in one of them)."""
    batch, seq = sizes["batch"], sizes["seq"]
    tokens = torch.randint(0, params["vocab_size"], (batch, seq), generator=generator)
    lengths = torch.randint(1, seq + 1, (batch,), generator=generator)
    padding = torch.arange(seq) < (seq - lengths).unsqueeze(1)
    return {"tokens": tokens, "padding": padding}


class ListingModel(nn.Module):
    """Two named inputs (numeric features, a category id) and two named outputs
    (probability of a sale, expected price): a shared trunk with two heads."""

    def __init__(self, n_features: int, n_categories: int, hidden: int) -> None:
        super().__init__()
        self.category = nn.Embedding(n_categories, hidden)
        self.numeric = nn.Linear(n_features, hidden)
        self.trunk = nn.Sequential(nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.sale = nn.Linear(hidden, 1)
        self.price = nn.Linear(hidden, 1)

    def forward(self, numeric: torch.Tensor, category: torch.Tensor) -> dict[str, torch.Tensor]:
        shared = self.trunk(self.numeric(numeric) + self.category(category))
        return {"sold": torch.sigmoid(self.sale(shared)), "price": self.price(shared)}


class SequenceRegressor(nn.Module):
    """GRU over a (batch, seq, features) series → the last step's hidden state → Linear."""

    def __init__(self, n_features: int, hidden: int, n_outputs: int) -> None:
        super().__init__()
        self.gru = nn.GRU(n_features, hidden, batch_first=True)
        self.head = nn.Linear(hidden, n_outputs)

    def forward(self, series):
        states, _ = self.gru(series)
        return self.head(states[:, -1])
