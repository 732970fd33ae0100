"""The hand-written baseline for ``zoo export binary``: torch.onnx.export(dynamo=True)
of the same network, then onnxruntime against PyTorch at the same batch sizes."""

import sys
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(8, 4), nn.Linear(4, 3), nn.Linear(3, 1), nn.Sigmoid()).eval()
with tempfile.TemporaryDirectory() as folder:
    path = Path(folder) / "binary.onnx"
    program = torch.onnx.export(
        model,
        (torch.randn(2, 8),),
        input_names=["x"],
        output_names=["probability"],
        dynamic_shapes=({0: torch.export.Dim("batch")},),
        dynamo=True,
    )
    program.save(str(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (2, 1, 64):
        x = torch.randn(batch, 8)
        with torch.inference_mode():
            expected = model(x).numpy()
        (got,) = session.run(None, {"x": x.numpy()})
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
sys.stdout.write("ok\n")
