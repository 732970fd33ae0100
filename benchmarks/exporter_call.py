"""One ``torch.onnx.export`` call on a saved Hugging Face model, timed alone in a fresh
process: ``python exporter_call.py FOLDER dynamo|torchscript``. It prints the call's
seconds: what the exporter itself costs, beside zoo's whole ``zoo export`` (ratio 9).
optimum-cli calls the TorchScript exporter (``dynamo=False``); zoo exports through torch.export."""

import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
from transformers import AutoModel

warnings.filterwarnings("ignore")  # the TorchScript exporter's deprecation warning
folder, kind = Path(sys.argv[1]), sys.argv[2]


class ByKeyword(torch.nn.Module):
    """The model called as ``model(input_ids=...)``, by both exporters alike."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, use_cache=False).last_hidden_state


model = ByKeyword(AutoModel.from_pretrained(folder)).eval()
ids = torch.randint(0, model.model.config.vocab_size, (2, 8))
with torch.inference_mode():
    model(ids)  # transformers' lazily imported modules load here, not in the timed call
with tempfile.TemporaryDirectory() as out:
    start = time.perf_counter()
    if kind == "torchscript":
        torch.onnx.export(model, (ids,), str(Path(out) / "m.onnx"), input_names=["input_ids"],
                          dynamic_axes={"input_ids": {0: "batch", 1: "seq"}}, dynamo=False, opset_version=18)
    else:
        seq = {0: torch.export.Dim("batch"), 1: torch.export.Dim("seq", min=2, max=64)}
        program = torch.onnx.export(model, (ids,), input_names=["input_ids"], dynamic_shapes=(seq,), dynamo=True, optimize=True)
        program.save(str(Path(out) / "m.onnx"))
    print(f"{time.perf_counter() - start:.3f}")
