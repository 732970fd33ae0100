"""Fake architectures and checks shared by the reliability tests (issue 6).

Each fake is a real ``nn.Module`` run by real torch/onnx/onnxruntime: only the
bug is fake.
"""

from __future__ import annotations

import errno
from pathlib import Path

import zoo
from zoo import Architecture, Exporter, Input, Output


def _linear(width: int = 4):
    from torch import nn

    return nn.Linear(width, 2)


def forward_raises():
    from torch import nn

    class Raises(nn.Module):
        def forward(self, x):
            raise RuntimeError("matmul shapes do not fit")

    return Raises()


def forward_nan():
    from torch import nn

    class NaN(nn.Linear):
        def forward(self, x):
            return super().forward(x) * float("nan")

    return NaN(4, 2)


def backward(mode: str = "raises"):
    """A custom autograd Function whose backward raises, or prints and warns, as plugin code may."""
    import warnings

    import torch
    from torch import nn

    class Scale(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return 2 * x

        @staticmethod
        def backward(ctx, grad):
            if mode == "raises":
                raise RuntimeError("no gradient formula for this layer")
            if mode == "exits":
                raise SystemExit(3)
            print("backward says hello")
            warnings.warn("backward is approximate", UserWarning, stacklevel=1)
            return 2 * grad

    class Custom(nn.Linear):
        def forward(self, x):
            return Scale.apply(super().forward(x))

    return Custom(4, 2)


def forward_data_dependent():
    from torch import nn

    class Branchy(nn.Linear):
        def forward(self, x):
            y = super().forward(x)
            if y.sum() > 0:  # a Python branch on a tensor value: torch.export refuses it
                return y
            return -y

    return Branchy(4, 2)


def build_not_module():
    return {"weight": [1.0, 2.0]}


def tokens(vocab_size: int = 10):
    from torch import nn

    class Bag(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(max(vocab_size, 1), 3)

        def forward(self, ids):
            return self.embed(ids).mean(dim=1)

    return Bag()


X = Input("x", ("batch", 4))
Y = Output("y", task="regression", shape=("batch", 2))


class FakeArchitectures:
    """Architectures with the bugs plugin authors really write."""

    @zoo.hookimpl
    def register_architectures(self, register):
        register(Architecture(name="forward-raises", build=forward_raises, inputs=(X,), outputs=(Y,)))
        register(Architecture(name="forward-nan", build=forward_nan, inputs=(X,), outputs=(Y,)))
        register(Architecture(name="backward-plugin", build=backward, inputs=(X,), outputs=(Y,)))
        # declares 3 outputs per row, computes 2
        register(
            Architecture(
                name="wrong-shape", build=_linear, inputs=(Input("x", ("batch", "width")),),
                outputs=(Output("y", task="regression", shape=("batch", 3)),),
            )
        )
        register(Architecture(name="data-dependent", build=forward_data_dependent, inputs=(X,), outputs=(Y,)))
        register(Architecture(name="not-a-module", build=build_not_module, inputs=(X,), outputs=(Y,)))
        register(
            Architecture(
                name="token-bag", build=tokens,
                inputs=(Input("ids", ("batch", "seq"), dtype="int64", range=(0, "vocab_size")),),
                outputs=(Output("y", task="regression", shape=("batch", 3)),),
            )
        )


def disk_full_exporter(real: Exporter) -> Exporter:
    """The ONNX exporter on a disk that fills up half way through writing the file."""

    def export(job):
        real.export(job)
        data = job.path.read_bytes()
        job.path.write_bytes(data[: len(data) // 2])  # what a full disk leaves behind
        raise OSError(errno.ENOSPC, "No space left on device", str(job.path))

    return Exporter(
        name="onnx-full-disk", suffix=".onnx", export=export, load=real.load,
        read_metadata=real.read_metadata, default_opset=real.default_opset, opsets=real.opsets,
    )


def leftovers(folder: Path) -> list[str]:
    """Everything in ``folder`` an export could have left: outputs, side files, hidden staging folders."""
    return sorted(p.name for p in folder.iterdir() if p.suffix in (".onnx", ".data", ".tmp") or p.name.startswith("."))


def assert_clean_failure(result, code: int, *needles: str) -> str:
    """Exit ``code``, exactly one stderr line that starts ``zoo: error:`` and holds each
    needle (case-insensitive), and no traceback anywhere."""
    stderr = result.stderr
    assert result.exit_code == code, (result.exit_code, result.output)
    assert "Traceback" not in result.output and "Traceback" not in stderr
    error_lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(error_lines) == 1, stderr
    line = error_lines[0]
    assert line.startswith("zoo: error: "), line
    for needle in needles:
        assert needle.lower() in line.lower(), (needle, line)
    return line
