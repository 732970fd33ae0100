"""The example plugin's trained weight set: a digits classifier for the seed plugin's
``multiclass-softmax`` (a plugin may register weights for any plugin's architecture).

Made by ``tools/train_digits.py`` from scikit-learn's bundled digits; both files
ship in the package and are pinned by size and sha256.
"""

from __future__ import annotations

from pathlib import Path

import zoo

DATA = Path(__file__).resolve().parent / "data"

HELDOUT = zoo.EvalSet(
    name="digits held-out split",  # 359 of scikit-learn's 1,797 digits, never trained on
    source=DATA / "digits-heldout.npz",
    sha256="34b04d54ae620650c2d17129f183595db6a8a8cef812e4a988b43a000615a7a7",
    size=14473,
)

DIGITS = zoo.Weights(
    name="digits",
    architecture="multiclass-softmax",
    source=DATA / "digits.safetensors",
    sha256="c47a51395009926a68348a78d47ad9ad1304b2b5b0889023487e2386a014610d",
    size=9920,
    params={"in_features": 64, "hidden": (32,), "n_classes": 10, "activation": "relu"},
    summary="8×8 handwritten digits (scikit-learn), pixels scaled to [0, 1]; 64→32→10 MLP",
    claim=zoo.MetricClaim("accuracy", 0.972, HELDOUT, tolerance=0.005),
    default=True,
)


@zoo.hookimpl
def register_weights(register):
    register(DIGITS)
