"""A weights file is untrusted input: every hostile one is refused with one line that
names the file and says what to do (a WeightsError, exit 2), never a traceback, a
silent cast, a hang or a read that never ends. Real torch, real files."""

from __future__ import annotations

import hashlib
import os
import threading
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from reliability_fakes import assert_clean_failure, leftovers

from zoo.build.model import build_model
from zoo.build.weights import load_weights, read_state_dict, sha256
from zoo.errors import UsageError, WeightsError

OUT = "out.onnx"
OWNER = "binary-sigmoid"


@pytest.fixture
def binary(zoo):
    """The real binary-sigmoid module and its state dict (keys "0.weight", "0.bias", ...)."""
    return build_model(zoo.architecture("binary")).module


@pytest.fixture
def state(binary) -> dict[str, torch.Tensor]:
    return {key: value.clone() for key, value in binary.state_dict().items()}


def export_fails(run, tmp_path: Path, weights: Path, *needles: str) -> str:
    """``zoo export binary --weights FILE``: exit 2, one line naming the file, no traceback, no output."""
    line = assert_clean_failure(run("export", "binary", "--weights", str(weights), "-o", OUT), 2, weights.name, *needles)
    assert leftovers(tmp_path) == [], "a failed export left files behind"
    return line


def refused(binary, path: Path, *needles: str) -> str:
    """``load_weights`` raises a one-line WeightsError (a usage error) holding each needle."""
    with pytest.raises(WeightsError) as info:
        load_weights(binary, path, OWNER)
    message = str(info.value)
    assert isinstance(info.value, UsageError) and info.value.exit_code == 2
    assert "\n" not in message and "\r" not in message, message
    for needle in (path.name, *needles):
        assert needle.lower() in message.lower(), (needle, message)
    return message


def finishes(call: Callable[[], object], unblock: Callable[[], None] | None = None, seconds: float = 20.0) -> object:
    """Run ``call`` in a thread; fail (after ``unblock`` frees the thread) if it is still running after ``seconds``."""
    outcome: dict[str, object] = {}

    def target() -> None:
        try:
            outcome["value"] = call()
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        if unblock is not None:
            unblock()
        thread.join(5)
        pytest.fail(f"still running after {seconds} s: it blocked or reads without end")
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome.get("value")


# -- 1. keys that are not names ---------------------------------------------------------


def test_non_string_key_is_refused_naming_it(tmp_path, binary):
    path = tmp_path / "w.pt"
    torch.save({1: torch.zeros(3)}, path)
    message = refused(binary, path, "key 1 is an int", "torch.save(model.state_dict()")
    assert "TypeError" not in message


def test_non_string_key_among_good_ones_via_cli(run, tmp_path, state):
    path = tmp_path / "mixed.pt"
    torch.save({**state, (0, "weight"): torch.zeros(3)}, path)
    export_fails(run, tmp_path, path, "key (0, 'weight')", "tuple", "not a parameter name")


def test_value_that_is_not_a_tensor_is_refused_naming_its_key(tmp_path, binary, state):
    path = tmp_path / "w.pt"
    torch.save({**state, "0.weight": [1.0, 2.0]}, path)
    refused(binary, path, "0.weight", "list", "not a tensor")


def test_key_with_a_newline_cannot_break_the_one_line(run, tmp_path, state):
    # a name from the file is shown escaped: it can neither add lines nor forge a second error
    path = tmp_path / "w.pt"
    torch.save({**state, "0.weight\nzoo: error: forged": torch.zeros(1)}, path)
    line = export_fails(run, tmp_path, path, "unexpected keys", "'0.weight\\nzoo: error: forged'")
    assert line.count("zoo: error:") == 2  # ours, and the escaped name inside it


def test_huge_key_is_clipped(tmp_path, binary, state):
    path = tmp_path / "w.pt"
    torch.save({**state, "k" * 100_000: torch.zeros(1)}, path)
    assert len(refused(binary, path, "unexpected keys", "…")) < 500


# -- 2. tensors that are not dense strided CPU tensors ------------------------------------
# torch 2.13 torch.load(weights_only=True) loads every one of these without complaint
# (checked below), so zoo has to refuse them itself.

HOSTILE_TENSORS: dict[str, Callable[[torch.Size], torch.Tensor]] = {
    "sparse": lambda shape: torch.zeros(shape).to_sparse(),
    "sparse_csr": lambda shape: torch.zeros(shape).to_sparse_csr(),
    "meta": lambda shape: torch.empty(shape, device="meta"),
    "quantized": lambda shape: torch.quantize_per_tensor(torch.zeros(shape), 0.1, 0, torch.quint8),
    "nested": lambda shape: torch.nested.nested_tensor([torch.zeros(shape), torch.zeros(shape)]),
    "nested_jagged": lambda shape: torch.nested.nested_tensor([torch.zeros(shape), torch.zeros(shape)], layout=torch.jagged),
}


@pytest.mark.filterwarnings("ignore::UserWarning")  # torch: sparse CSR "beta", nested "prototype", quantize deprecated
@pytest.mark.parametrize("kind", sorted(HOSTILE_TENSORS))
def test_non_dense_tensor_is_refused_with_key_and_kind(run, tmp_path, state, kind):
    path = tmp_path / f"{kind}.pt"
    torch.save({**state, "0.weight": HOSTILE_TENSORS[kind](state["0.weight"].shape)}, path)
    assert "0.weight" in torch.load(path, weights_only=True)  # weights_only alone lets it through
    line = export_fails(run, tmp_path, path, "0.weight", f"a {kind.split('_')[0]}", "only dense tensors are weights")
    assert "Internal error" not in line and "Error(s) in loading state_dict" not in line


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_non_dense_tensor_under_an_unexpected_key_is_refused_too(tmp_path, binary, state):
    # the kind is checked for every tensor in the file, not only for the ones the model has
    path = tmp_path / "w.pt"
    torch.save({**state, "extra": torch.zeros(2, 2).to_sparse()}, path)
    refused(binary, path, "extra", "sparse")


# -- 3. dtype kinds ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dtype", "value"),
    [(torch.complex64, 1 + 2j), (torch.bool, True), (torch.int64, 3), (torch.uint8, 3)],
)
def test_other_dtype_kind_is_refused_not_cast(run, tmp_path, binary, state, dtype, value):
    path = tmp_path / "w.pt"
    torch.save({**state, "0.weight": torch.full(state["0.weight"].shape, value, dtype=dtype)}, path)
    before = binary.state_dict()["0.weight"].clone()
    message = refused(binary, path, "dtype mismatches", "0.weight", str(dtype).removeprefix("torch."), "float32")
    assert "does not fit binary-sigmoid" in message
    assert torch.equal(binary.state_dict()["0.weight"], before), "the model was changed by refused weights"
    export_fails(run, tmp_path, path, "dtype mismatches", "0.weight")


def test_float64_weights_load_into_float32_model(tmp_path, binary, state):
    # float to float of another width is allowed: torch casts on load, as documented
    path = tmp_path / "w.pt"
    wide = {key: value.double() + 0.25 for key, value in state.items()}
    torch.save(wide, path)
    record = load_weights(binary, path, OWNER)
    loaded = binary.state_dict()
    assert loaded["0.weight"].dtype == torch.float32
    assert torch.allclose(loaded["0.weight"], wide["0.weight"].float())
    assert record["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


def batchnorm_model() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))


def test_integer_buffer_loads_when_the_model_has_it_integer(tmp_path):
    # BatchNorm's num_batches_tracked is int64 in the model: int64 in the file is right
    trained = batchnorm_model()
    trained.train()(torch.randn(8, 4))
    path = tmp_path / "bn.pt"
    torch.save(trained.state_dict(), path)
    fresh = batchnorm_model()
    load_weights(fresh, path, "bn")
    assert fresh.state_dict()["1.num_batches_tracked"].dtype == torch.int64
    assert int(fresh.state_dict()["1.num_batches_tracked"]) == 1
    assert torch.equal(fresh.state_dict()["1.running_mean"], trained.state_dict()["1.running_mean"])


def test_float_in_an_integer_buffer_is_refused(tmp_path):
    state = batchnorm_model().state_dict()
    state["1.num_batches_tracked"] = torch.tensor(1.5)
    path = tmp_path / "bn.pt"
    torch.save(state, path)
    refused(batchnorm_model(), path, "1.num_batches_tracked", "float32 (file)", "int64 (model)")


def test_complex_in_safetensors_is_refused_too(tmp_path, binary, state):
    from safetensors.torch import save_file

    path = tmp_path / "w.safetensors"
    save_file({**state, "0.weight": torch.ones(state["0.weight"].shape, dtype=torch.complex64)}, str(path))
    refused(binary, path, "dtype mismatches", "0.weight", "complex64", "float32")


# -- 4. paths that are not regular files ---------------------------------------------------


def test_folder_is_named_a_folder(run, tmp_path):
    folder = tmp_path / "trained.pt"
    folder.mkdir()
    export_fails(run, tmp_path, folder, "is a folder")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_fifo_is_refused_without_blocking(run, tmp_path):
    fifo = tmp_path / "w.pt"
    os.mkfifo(fifo)

    def unblock() -> None:  # a reader blocked in open() gets EOF once a writer comes and goes
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))

    result = finishes(lambda: run("export", "binary", "--weights", str(fifo), "-o", OUT), unblock)
    assert_clean_failure(result, 2, "w.pt", "is a FIFO, not a regular file")
    with pytest.raises(WeightsError, match="is a FIFO, not a regular file"):
        finishes(lambda: sha256(fifo), unblock)


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
@pytest.mark.parametrize("how", ["direct", "link"])
def test_character_device_is_refused_without_reading(run, tmp_path, how):
    path = Path("/dev/zero")
    if how == "link":  # a .pt name that leads to /dev/zero: links are followed, then refused
        path = tmp_path / "zero.pt"
        path.symlink_to("/dev/zero")
    result = finishes(lambda: run("export", "binary", "--weights", str(path), "-o", OUT))
    assert_clean_failure(result, 2, path.name, "is a character device, not a regular file")
    with pytest.raises(WeightsError, match="character device"):
        finishes(lambda: sha256(path))


def test_dangling_link_says_so(tmp_path):
    link = tmp_path / "w.pt"
    link.symlink_to(tmp_path / "gone.pt")
    with pytest.raises(WeightsError, match="is a link to a file that does not exist"):
        read_state_dict(link)


# -- 5. sha256 only of regular files -------------------------------------------------------


def test_sha256_hashes_a_whole_regular_file(tmp_path):
    path = tmp_path / "w.bin"
    data = os.urandom(3 << 20) + b"tail"  # more than one read chunk
    path.write_bytes(data)
    assert sha256(path) == hashlib.sha256(data).hexdigest()


def test_sha256_refuses_a_folder(tmp_path):
    with pytest.raises(WeightsError, match="is a folder"):
        sha256(tmp_path)


# -- the file never decides how much memory zoo spends --------------------------------------


def test_compressed_archive_cannot_expand_past_its_size(run, tmp_path, binary, state):
    # torch.save never compresses, but torch.load inflates: a ~200 kB file would become 200 MB
    plain = tmp_path / "plain.pt"
    torch.save({**state, "big": torch.zeros(50_000_000)}, plain)
    bomb = tmp_path / "bomb.pt"
    with zipfile.ZipFile(plain) as source, zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as target:
        for entry in source.infolist():
            target.writestr(entry.filename, source.read(entry.filename))
    plain.unlink()
    assert bomb.stat().st_size < 1_000_000
    refused(binary, bomb, "compressed archive", "would expand to", "re-save it with torch.save")
    export_fails(run, tmp_path, bomb, "compressed archive")


def test_plain_torch_save_and_legacy_format_still_load(tmp_path, binary, state):
    for name, kwargs in (("zip.pt", {}), ("legacy.pt", {"_use_new_zipfile_serialization": False})):
        path = tmp_path / name
        torch.save({key: value + 1 for key, value in state.items()}, path, **kwargs)
        load_weights(binary, path, OWNER)
        assert torch.equal(binary.state_dict()["0.bias"], state["0.bias"] + 1)
