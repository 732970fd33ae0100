"""Train the example plugin's `digits` weight set and write its held-out split.

scikit-learn's bundled digits (1,797 8×8 images, 10 classes), pixels scaled to
[0, 1]; 80% train, 20% held out (a fixed permutation). The model is the seed
plugin's `multiclass-softmax` with in_features=64, hidden=32, n_classes=10,
activation=relu, trained full-batch with Adam on the log of its softmax. Run
from the repository root, then paste the printed entry values into
zoo_example_plugin/weights.py:

    python examples/zoo-example-plugin/tools/train_digits.py
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from sklearn.datasets import load_digits

import zoo

PARAMS = {"in_features": 64, "hidden": (32,), "n_classes": 10, "activation": "relu"}
DATA = Path(__file__).resolve().parents[1] / "zoo_example_plugin" / "data"


def main() -> None:
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(y))
    held = order[: len(y) // 5]
    train = order[len(y) // 5 :]
    torch.manual_seed(0)
    model = zoo.load_zoo(entry_points=False).architecture("multiclass-softmax").build(**PARAMS)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    xt, yt = torch.from_numpy(x[train]), torch.from_numpy(y[train])
    for _ in range(400):
        optimizer.zero_grad()
        loss = torch.nn.functional.nll_loss(torch.log(model(xt).clamp_min(1e-12)), yt)
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        accuracy = float((model(torch.from_numpy(x[held])).argmax(-1).numpy() == y[held]).mean())
    DATA.mkdir(exist_ok=True)
    weights = DATA / "digits.safetensors"
    heldout = DATA / "digits-heldout.npz"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    np.savez_compressed(heldout, x=x[held], labels=y[held])
    for path in (weights, heldout):
        print(f"{path.name}: {path.stat().st_size} bytes, sha256 {hashlib.sha256(path.read_bytes()).hexdigest()}")
    print(f"train loss {loss.item():.4f}, held-out accuracy {accuracy:.4f} on {len(held)} rows", file=sys.stderr)


if __name__ == "__main__":
    main()
