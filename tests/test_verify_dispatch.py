"""``zoo verify`` finds a file's exporter from the metadata inside it, not its suffix:
formats may share a suffix, and ``-o`` may give any name."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest
from zoo.exporters import onnx as onnx_format

import zoo
from zoo.build.model import build_model
from zoo.errors import UsageError
from zoo.exporting.pipeline import export_model
from zoo.host.manager import Zoo, load_zoo
from zoo.verification.artifact import verify_artifact


def described(description: str):
    """onnx's own loader, with a runtime description that tells which exporter loaded the file."""

    def load(path: Path, device: str):
        runner = onnx_format.load(path, device)
        runner.info = dataclasses.replace(runner.info, runtime=description, version="")  # zoo.RunnerInfo names who ran it
        return runner

    return load


class SharedSuffix:
    """A second format that also writes ``.onnx``; its name sorts before 'onnx'."""

    @zoo.hookimpl
    def register_exporters(self, register):
        register(
            zoo.Exporter(
                name="a-onnx",
                suffix=".onnx",
                export=onnx_format.export,
                load=described("a-onnx loader"),
                read_metadata=onnx_format.read_metadata,
                default_opset=onnx_format.DEFAULT_OPSET,
            )
        )


@pytest.fixture(scope="module")
def shared_zoo() -> Zoo:
    the_zoo = load_zoo(entry_points=False, extra=[("shared", SharedSuffix())])
    assert not the_zoo.problems and [e.name for e in the_zoo.exporters] == ["a-onnx", "onnx"]
    return the_zoo


@pytest.fixture(scope="module")
def exported(shared_zoo: Zoo, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("shared")
    files = {}
    for name in ("onnx", "a-onnx"):
        path = folder / f"{name}.onnx"
        assert export_model(build_model(shared_zoo.architecture("binary")), shared_zoo.exporter(name), path).ok
        files[name] = path
    return files


@pytest.mark.parametrize("name", ["onnx", "a-onnx"])
def test_two_formats_sharing_a_suffix_each_verify_their_own_files(shared_zoo, exported, name):
    result = verify_artifact(shared_zoo, exported[name])
    assert result.ok, result.error
    assert result.exporter.name == name
    assert (result.verification.runtime == "a-onnx loader") == (name == "a-onnx")


def test_a_file_whose_exporter_is_not_installed_says_so(exported):
    builtins_only = load_zoo(entry_points=False)
    with pytest.raises(UsageError, match="written by the 'a-onnx' exporter, which is not installed"):
        verify_artifact(builtins_only, exported["a-onnx"])


def test_export_to_a_foreign_suffix_verifies_from_the_metadata(run, tmp_path):
    exported = run("export", "binary", "-o", "model.txt")
    assert exported.exit_code == 0, exported.output
    verified = run("verify", "model.txt")
    assert verified.exit_code == 0, verified.output
    assert verified.stdout.splitlines()[-1] == "ok"


def test_a_file_with_another_formats_suffix_is_read_by_the_format_that_wrote_it(example_zoo, tmp_path):
    """A pt2 archive named .onnx: the onnx reader fails, the pt2 reader finds the metadata."""
    path = tmp_path / "listing.pt2"
    assert export_model(build_model(example_zoo.architecture("listing")), example_zoo.exporter("pt2"), path).ok
    renamed = tmp_path / "listing.onnx"
    shutil.move(path, renamed)
    result = verify_artifact(example_zoo, renamed)
    assert result.ok and result.exporter.name == "pt2"


class RecordingPt2:
    """The example plugin's pt2 format, noting each file its reader is asked about."""

    def __init__(self, pt2) -> None:
        self.asked: list[str] = []

        def read_metadata(path):
            self.asked.append(Path(path).name)
            return pt2.read_metadata(path)

        self.exporter = dataclasses.replace(pt2.EXPORTER, read_metadata=read_metadata)

    @zoo.hookimpl
    def register_exporters(self, register):
        register(self.exporter)


def test_the_first_reader_that_parses_the_file_decides(example_plugin, tmp_path):
    """An ONNX file without zoo metadata is refused by the onnx reader's answer
    alone: asking the pt2 reader next only made torch.export.load log a traceback."""
    import onnx
    from zoo_example_plugin import pt2

    recording = RecordingPt2(pt2)
    the_zoo = load_zoo(entry_points=False, extra=[("recording", recording)])
    path = tmp_path / "plain.onnx"
    assert export_model(build_model(the_zoo.architecture("binary")), the_zoo.exporter("onnx"), path).ok
    model = onnx.load(str(path))
    del model.metadata_props[:]
    onnx.save(model, str(path))
    with pytest.raises(UsageError, match="has no zoo metadata"):
        verify_artifact(the_zoo, path)
    assert recording.asked == []
    shutil.copy(path, tmp_path / "plain.txt")  # no suffix matches: the readers are probed, onnx's first
    with pytest.raises(UsageError, match="has no zoo metadata"):
        verify_artifact(the_zoo, tmp_path / "plain.txt")
    assert recording.asked == []
