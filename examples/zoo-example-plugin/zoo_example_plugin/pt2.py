"""The ``pt2`` export format: a ``torch.export`` program archive.

``zoo export NAME --format pt2`` writes ``NAME.pt2`` with ``torch.export.save``;
zoo then verifies it the same way as an ONNX file, by loading it back with
``torch.export.load`` and comparing its outputs with the PyTorch module's at
several batch sizes and sequence lengths. The zoo metadata (architecture,
parameters, seed) travels inside the archive as an extra file, so
``zoo verify NAME.pt2`` can rebuild the model from the file alone.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import zoo
from zoo import Exporter, ExportJob

MANIFEST = "zoo_manifest.json"  # extra file inside the archive: metadata + input/output names


def export(job: ExportJob) -> list[Path]:
    import torch

    program = torch.export.export(
        job.module, job.torch_args(), kwargs=job.torch_kwargs() or None, dynamic_shapes=job.torch_dynamic_shapes()
    )
    manifest = {"metadata": job.metadata, "inputs": list(job.sample), "outputs": job.output_names}
    torch.export.save(program, str(job.path), extra_files={MANIFEST: json.dumps(manifest)})
    return [job.path]


def load_program(path: Path) -> tuple[Any, dict[str, Any]]:
    """The exported program and the manifest stored beside it in the archive."""
    # A .pt2 file is a zip archive. Asked about anything else, torch.export.load
    # logs a full traceback on stderr before raising: refuse it here, quietly.
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{Path(path).name} is not a zip archive, so not a .pt2 file")
    import torch

    extra = {MANIFEST: ""}
    program = torch.export.load(str(path), extra_files=extra)
    if not extra[MANIFEST]:
        raise ValueError(f"{Path(path).name} has no {MANIFEST}: it was not written by 'zoo export --format pt2'")
    return program, json.loads(extra[MANIFEST])


class ProgramRunner(zoo.Runner):
    """Runs the reloaded program: input names → numpy arrays in, output names → numpy arrays out.
    The format runs its files itself: no registered runtime runs pt2 files, so zoo uses this ``Exporter.load``."""

    def __init__(self, path: Path, device: str) -> None:
        import torch

        program, manifest = load_program(path)
        self.module = program.module().to(device)
        self.device = torch.device(device)
        self.input_names = manifest["inputs"]
        self.output_names = manifest["outputs"]
        self.input_shapes = {name: () for name in self.input_names}  # the program keeps its dynamic shapes
        self.info = zoo.RunnerInfo("torch.export program", f"(torch {torch.__version__})", device, (device,))

    def run(self, feed: dict[str, Any]) -> dict[str, Any]:
        import torch

        args = [torch.as_tensor(feed[name], device=self.device) for name in self.input_names]
        with torch.no_grad():
            result = self.module(*args)
        if isinstance(result, torch.Tensor):
            values = [result]
        elif isinstance(result, dict):
            values = [result[name] for name in self.output_names]
        else:
            values = list(result)
        return {name: value.detach().cpu().numpy() for name, value in zip(self.output_names, values)}


def load(path: Path, device: str) -> ProgramRunner:
    return ProgramRunner(path, device)


def read_metadata(path: Path) -> dict[str, str]:
    return load_program(path)[1]["metadata"]


EXPORTER = Exporter(
    name="pt2",
    suffix=".pt2",
    summary="torch.export program archive (torch.export.save), verified by reloading it",
    export=export,
    load=load,
    read_metadata=read_metadata,
)
