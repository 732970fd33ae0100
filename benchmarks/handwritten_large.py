"""The hand-written baseline for a large ``zoo export three-layer-stack --param width=W``:
build the same stack, ``torch.onnx.export(dynamo=True)``, save (external data past
protobuf's 2 GB), one onnxruntime run against PyTorch. Usage: handwritten_large.py WIDTH FILE"""

import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

width, path = int(sys.argv[1]), Path(sys.argv[2])
torch.manual_seed(0)
model = nn.Sequential(nn.Linear(10, width), nn.Linear(width, width), nn.Linear(width, 5)).eval()
weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
program = torch.onnx.export(
    model, (torch.randn(2, 10),), input_names=["x"], output_names=["prediction"],
    dynamic_shapes=({0: torch.export.Dim("batch")},), dynamo=True,
)
program.save(str(path), external_data=weight_bytes > 2**31 - 2**24)
del program
session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
x = torch.randn(4, 10)
with torch.inference_mode():
    expected = model(x).numpy()
(got,) = session.run(None, {"x": x.numpy()})
np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-4)
sys.stdout.write("ok\n")
