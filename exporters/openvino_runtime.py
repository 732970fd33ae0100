"""The OpenVINO runtime: ONNX files on OpenVINO's CPU device (``pip install openvino``, or ``zoo-onnx[openvino]``).

Registered through ``register_runtimes`` like any third-party runtime, with the
public ``zoo`` API only. Without OpenVINO installed it is listed as
unavailable with the install line, and nothing is imported.

OpenVINO's CPU plugin computes in bfloat16 by default on a CPU with AVX-512
BF16 or AMX (``INFERENCE_PRECISION_HINT``): the runner reports the precision
in force, so a report says which one its numbers came from.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import zoo
from zoo import Runner, RunnerInfo, Runtime, Setting

INSTALL = "pip install openvino (or zoo-onnx[openvino])"
PRECISIONS = {"f32": "f32", "bf16": "bf16", "f16": "f16"}  # --runtime openvino:inference_precision=VALUE
SETTINGS = {
    "inference_precision": Setting("INFERENCE_PRECISION_HINT (default: the CPU's own, bf16 where it has AVX-512 BF16 or AMX)", tuple(PRECISIONS)),
    "threads": Setting("INFERENCE_NUM_THREADS (default: OpenVINO's own)"),
}
TYPE_NAMES = {"float32": "f32", "bfloat16": "bf16", "float16": "f16"}


def available() -> bool:
    return importlib.util.find_spec("openvino") is not None


def version() -> str:
    """From the installed distribution: ``zoo plugins`` imports no runtime library."""
    return importlib.metadata.version("openvino")


def devices() -> tuple[str, ...]:
    return ("cpu",)


def compile_model(model_bytes: bytes | None, path: Path, settings: Mapping[str, str]) -> tuple[Any, dict[str, str]]:
    """The model compiled for the CPU device under ``settings``, and the settings in
    force as OpenVINO reports them (the precision it chose when none was asked)."""
    import openvino as ov

    core = ov.Core()
    config: dict[str, Any] = {}
    if "inference_precision" in settings:
        config["INFERENCE_PRECISION_HINT"] = PRECISIONS[settings["inference_precision"]]
    if "threads" in settings:
        config["INFERENCE_NUM_THREADS"] = int(settings["threads"])
    # from the path, external weights are found beside it; small files from the bytes zoo already read
    model = core.read_model(str(path)) if model_bytes is None else core.read_model(model=model_bytes, weights=b"")
    compiled = core.compile_model(model, "CPU", config)
    precision = str(compiled.get_property("INFERENCE_PRECISION_HINT")).removeprefix("<Type: '").removesuffix("'>")
    precision = TYPE_NAMES.get(precision, precision)
    asked = settings.get("inference_precision")
    if asked is None:
        shown = {"inference_precision": f"{precision}: this CPU's default"}
    elif asked != precision:  # OpenVINO falls back silently where the CPU lacks the instructions
        shown = {"inference_precision": f"{precision}, asked {asked}: this CPU has no {asked} kernels"}
    else:
        shown = {"inference_precision": precision}
    if "threads" in settings:
        shown["threads"] = settings["threads"]
    return compiled, shown


class OpenVinoRunner(Runner):
    """A model compiled for OpenVINO's CPU device; one infer request, abortable with ``cancel()``."""

    def __init__(self, path: Path, device: str, settings: Mapping[str, str]) -> None:
        from zoo.exporters.onnx_files import read_model

        if device != "cpu":
            raise RuntimeError(f"zoo runs OpenVINO on its CPU device only; --device {device} is not one of its devices (cpu)")
        model, data = read_model(path)
        self.compiled, shown = compile_model(data, path, settings)
        self.request = self.compiled.create_infer_request()
        self.info = RunnerInfo("openvino", version(), "cpu", ("CPU",), shown)
        # a port has several names (an fp16 file's input is also its cast's): the graph's is the one zoo feeds
        self.input_names = [graph_name(port, {i.name for i in model.graph.input}) for port in self.compiled.inputs]
        self.output_names = [graph_name(port, {o.name for o in model.graph.output}) for port in self.compiled.outputs]
        self.input_shapes = {
            name: tuple(d.get_length() if d.is_static else None for d in port.get_partial_shape())
            for name, port in zip(self.input_names, self.compiled.inputs)
        }

    def run(self, feed: Mapping[str, Any]) -> dict[str, Any]:
        results = self.request.infer({port: feed[name] for name, port in zip(self.input_names, self.compiled.inputs)})
        named = dict(zip(self.compiled.outputs, self.output_names))
        return {named.get(port, port.get_any_name()): value.copy() for port, value in results.items()}  # the request reuses its buffers

    abortable = True

    def abort(self) -> None:
        self.request.cancel()

    def close(self) -> None:
        self.request = self.compiled = None


def graph_name(port: Any, names: set[str]) -> str:
    """The one of ``port``'s names that the ONNX graph gives it."""
    return next((name for name in sorted(port.get_names()) if name in names), port.get_any_name())


def load(path: Path, device: str, settings: Mapping[str, str]) -> OpenVinoRunner:
    return OpenVinoRunner(path, device, settings)


def intermediates(path: Path, feed: dict[str, Any], settings: Mapping[str, str]) -> list[dict[str, Any]]:
    """Each module scope's last value computed by OpenVINO under ``settings``: where it diverges."""
    from zoo.exporters.onnx_files import exposed_model, scope_values

    exposed = exposed_model(path)
    if exposed is None:
        return []
    compiled, _ = compile_model(exposed.model_bytes, path, settings)
    results = compiled.create_infer_request().infer(feed)
    by_name = {port.get_any_name(): value for port, value in results.items()}
    return scope_values(exposed, [by_name[name] for name in exposed.names])


@zoo.hookimpl
def register_runtimes(register):
    register(
        Runtime(
            name="openvino",
            formats=("onnx",),
            load=load,
            summary="OpenVINO on its CPU device",
            install=INSTALL,
            available=available,
            devices=devices,
            version=version,
            settings=SETTINGS,
            precise={"inference_precision": "f32"},
            intermediates=intermediates,
        )
    )
