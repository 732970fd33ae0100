"""Train zoo's multiclass-softmax on scikit-learn's digits (a few seconds) and write what
`zoo export --weights ... --inputs ...` takes: digits.safetensors, test.npz (held-out rows
with their labels under the output's name) and calib.npz (training rows, for --calibration).

    python examples/train_digits.py
"""

import numpy as np
import torch
from safetensors.torch import save_file
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

import zoo
from zoo.build.model import build_model

X, y = load_digits(return_X_y=True)
X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, random_state=0)
scaler = StandardScaler().fit(X_train)
X_train, X_test = (scaler.transform(a).astype("float32") for a in (X_train, X_test))

arch = zoo.load_zoo().architecture("multiclass")
model = build_model(arch, {"in_features": 64, "hidden": (32, 16), "n_classes": 10, "activation": "relu"}).module
optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
inputs, targets = torch.from_numpy(X_train), torch.from_numpy(y_train)
for _ in range(300):  # full batch: about a second
    optimizer.zero_grad()
    torch.nn.functional.nll_loss(model(inputs).clamp_min(1e-12).log(), targets).backward()
    optimizer.step()

save_file(model.state_dict(), "digits.safetensors")
np.savez("test.npz", x=X_test, probabilities=y_test.astype("int64"))  # labels: class indices, one per row
np.savez("calib.npz", x=X_train)
print(f"trained on {len(X_train)} rows; wrote digits.safetensors, test.npz ({len(X_test)} rows), calib.npz")
