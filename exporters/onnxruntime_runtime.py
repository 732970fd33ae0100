"""The onnxruntime runtime: ONNX files on its CPU provider, or CUDA and TensorRT where the installed build has them.

Registered through ``register_runtimes`` like any third-party runtime, with the
public ``zoo`` API only. onnxruntime is imported inside the functions.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import zoo
from zoo import Runner, RunnerInfo, Runtime, Setting

OPTIMIZATION_LEVELS = {"disabled": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}
DEVICE_PROVIDERS = {"cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}
SETTINGS = {
    "graph_optimization": Setting("onnxruntime's graph optimization level (default all)", tuple(OPTIMIZATION_LEVELS)),
    "threads": Setting("intra-op threads (default: onnxruntime's own)"),
    "provider": Setting("with --device cuda: the CUDA provider (default) or TensorRT's, falling back to CUDA", ("cuda", "tensorrt")),
}


def version() -> str:
    """From the installed distribution: ``zoo plugins`` imports no runtime library."""
    return importlib.metadata.version("onnxruntime")


def devices() -> tuple[str, ...]:
    return ("cpu", "cuda")  # without a CUDA provider, --device cuda runs on the CPU provider and says so (RunnerInfo.note)


def providers_for(device: str, provider: str) -> tuple[list[str], str]:
    """The providers to ask for on ``device`` and a note when the build lacks them:
    ``tensorrt`` falls back to CUDA for what TensorRT cannot take, then the CPU."""
    import onnxruntime as ort

    have = ort.get_available_providers()
    wanted = [] if device != "cuda" else ["TensorrtExecutionProvider", "CUDAExecutionProvider"] if provider == "tensorrt" else ["CUDAExecutionProvider"]
    present = [p for p in wanted if p in have]
    if wanted and not present:
        return ["CPUExecutionProvider"], f"this onnxruntime has no {wanted[0]}: it ran on the CPU provider"
    return [*present, "CPUExecutionProvider"], ""


class OrtRunner(Runner):
    """An onnxruntime session that maps input names to arrays and back."""

    def __init__(self, path: Path, device: str, settings: Mapping[str, str]) -> None:
        import onnxruntime as ort
        from onnx import TensorProto
        from zoo.exporters.onnx_files import read_model

        ort.set_default_logger_severity(3)  # some load-time warnings ignore the session's level
        wanted, note = providers_for(device, settings.get("provider", "cuda"))
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if "threads" in settings:
            options.intra_op_num_threads = int(settings["threads"])
        level = settings.get("graph_optimization", "all")
        options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, OPTIMIZATION_LEVELS[level])
        model, data = read_model(path)
        io = [*model.graph.input, *model.graph.output]
        bfloat16 = [v.name for v in io if v.type.tensor_type.elem_type == TensorProto.BFLOAT16]
        if bfloat16:  # refused here rather than as a confusing dtype error on the first run
            raise RuntimeError(
                f"onnxruntime's Python API cannot take or return bfloat16 arrays (numpy has no bfloat16): "
                f"{', '.join(bfloat16)}; export a float32 or float16 version of the model to verify it"
            )
        if data is None:
            # Prepacking makes a packed copy of every weight while the session
            # loads: past 2 GB that doubles the peak memory. Without it,
            # onnxruntime maps the .data file instead of copying it.
            options.add_session_config_entry("session.disable_prepacking", "1")
        # external data is found relative to the file, so such a model loads from its path
        self.session = ort.InferenceSession(str(path) if data is None else data, sess_options=options, providers=wanted)
        self.run_options = ort.RunOptions()  # abort() sets its terminate flag: the running call returns
        self.run_options.log_severity_level = 4  # a terminated run logs an error in red: zoo says why itself
        shown = {"graph_optimization": level if "graph_optimization" in settings else f"{level} (default)", **({"threads": settings["threads"]} if "threads" in settings else {})}
        self.info = RunnerInfo("onnxruntime", ort.__version__, device, tuple(self.session.get_providers()), shown, note)
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.input_shapes = {i.name: tuple(d if isinstance(d, int) else str(d) for d in i.shape) for i in self.session.get_inputs()}

    def run(self, feed: Mapping[str, Any]) -> dict[str, Any]:
        self.run_options.terminate = False
        return dict(zip(self.output_names, self.session.run(None, dict(feed), self.run_options)))

    abortable = True

    def abort(self) -> None:
        self.run_options.terminate = True

    def close(self) -> None:
        """Free the session now: one left for the interpreter's exit after a terminated
        run can abort the process ("terminate called without an active exception")."""
        self.session = None

    def timed_call(self, inputs: Mapping[str, Any], device: str) -> Any:
        """On CUDA, inputs and outputs stay on the device (I/O binding), as PyTorch's do."""
        session = self.session
        if device != "cuda" or session.get_providers()[0] not in DEVICE_PROVIDERS.values():
            feed = {name: tensor.detach().cpu().numpy() for name, tensor in inputs.items()}
            return lambda: session.run(None, feed)
        import torch

        binding = session.io_binding()
        bound = {name: tensor.contiguous() for name, tensor in inputs.items()}  # alive as long as the call
        for name, tensor in bound.items():
            dtype = torch.empty((), dtype=tensor.dtype).numpy().dtype.type
            binding.bind_input(name, "cuda", 0, dtype, tuple(tensor.shape), tensor.data_ptr())
        for output in session.get_outputs():
            binding.bind_output(output.name, "cuda")

        def call_bound() -> Any:
            session.run_with_iobinding(binding)
            binding.synchronize_outputs()
            return bound

        return call_bound


def load(path: Path, device: str, settings: Mapping[str, str]) -> OrtRunner:
    return OrtRunner(path, device, settings)


def intermediates(path: Path, feed: dict[str, Any], settings: Mapping[str, str]) -> list[dict[str, Any]]:
    """Each module scope's last value, computed by onnxruntime's CPU provider under ``settings``."""
    import onnxruntime as ort
    from zoo.exporters.onnx_files import exposed_model, scope_values

    exposed = exposed_model(path)
    if exposed is None:
        return []
    options = ort.SessionOptions()
    options.log_severity_level = 3
    level = settings.get("graph_optimization", "all")
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, OPTIMIZATION_LEVELS[level])
    session = ort.InferenceSession(exposed.model_bytes, sess_options=options, providers=["CPUExecutionProvider"])
    return scope_values(exposed, session.run(exposed.names, feed))


@zoo.hookimpl
def register_runtimes(register):
    register(
        Runtime(
            name="onnxruntime",
            formats=("onnx",),
            load=load,
            summary="onnxruntime: CPU provider; CUDA and TensorRT providers with --device cuda|tensorrt where installed",
            install="pip install onnxruntime",
            devices=devices,
            version=version,
            settings=SETTINGS,
            precise={"graph_optimization": "disabled"},
            intermediates=intermediates,
            refused_dtypes=("bfloat16",),  # numpy has no bfloat16: its Python API can neither take nor return one
        )
    )
