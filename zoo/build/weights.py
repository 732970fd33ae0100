"""Load a user's trained weights without ever running code from the file.

``.safetensors`` is read with safetensors; ``.pt``/``.pth``/``.bin`` only with
``torch.load(weights_only=True)``, which refuses pickles that build arbitrary objects.

A weights file is untrusted input. Guarantees: zoo never runs code from it, never
opens a path that is not a regular file (a folder, FIFO, device or socket is named
and refused before any open, so nothing blocks or reads forever), never lets it
expand past its own size on disk (a compressed ``.pt`` archive is refused), and
accepts only a mapping of string names to dense, strided CPU tensors whose dtype
kind (float, complex, bool, integer) matches the model's tensor of the same name.
Every problem is a ``WeightsError``: one line that names the file and says what
to do. Float weights of another width (a float64 file into a float32 model) are
allowed and cast by torch on load, as ``load_state_dict`` does.
"""

from __future__ import annotations

from zoo.text import dtype_text

import hashlib
import os
import pickle
import warnings
import zipfile
from pathlib import Path
from typing import IO, Any

from zoo.files.hashing import sha256_of
from zoo.errors import WeightsError, one_line
from zoo.files.paths import check_input_file
from zoo.files.paths import refuse_irregular_input

SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")

_SAVE = "torch.save(model.state_dict(), path)"
_REGULAR_HINT = f"give a regular file holding a trained state dict ({', '.join(SUFFIXES)}), saved with {_SAVE}"
# What to do about a tensor that is not a dense strided CPU tensor, by kind.
_KIND_HINTS = {
    "sparse": "convert it with .to_dense() before saving",
    "nested": "save the model's own parameters, one dense tensor each",
    "quantized": "save the float model's state dict (or .dequantize() the tensor) before saving",
    "meta": "a meta tensor holds no values: save the state dict of the trained model",
}


def check_regular_file(path: Path) -> os.stat_result:
    """``os.stat`` of ``path`` if it is a regular file (links followed); else a
    ``WeightsError`` that says what it is. Opens nothing: a FIFO open would block."""
    return check_input_file(path, _REGULAR_HINT, WeightsError, "weights file ")


def sha256(path: Path) -> str:
    """The sha256 of a whole regular file (``WeightsError`` for any other kind of path)."""
    with _open_regular(path) as handle:
        return sha256_of(handle)


def _open_regular(path: Path) -> IO[bytes]:
    """Open ``path`` for reading, refusing anything but a regular file: checked
    before the open, and again on the open descriptor (the path may have been
    replaced in between; O_NONBLOCK keeps even that open of a FIFO from blocking)."""
    check_regular_file(path)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise WeightsError(f"cannot open weights file {str(path)!r}: {exc.strerror or exc}; give a file you can read") from None
    try:
        refuse_irregular_input(path, os.fstat(fd), _REGULAR_HINT, WeightsError, "weights file ")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb")


def read_state_dict(path: Path) -> dict[str, Any]:
    """The state dict in ``path``, validated (see the module docstring) but not yet
    compared with a model: that is ``load_weights``'s job."""
    import torch

    check_regular_file(path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise WeightsError(f"weights file {path.name!r}: use a {', '.join(SUFFIXES)} file")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols: not the user's business
            warnings.simplefilter("ignore")
            if suffix == ".safetensors":
                from safetensors.torch import load_file

                # safetensors checks that every tensor lies inside the file; it opens the
                # path itself, just checked to be a regular file.
                state = load_file(str(path), device="cpu")
            else:
                with _open_regular(path) as handle:
                    _refuse_expansion(handle, path)
                    state = torch.load(handle, map_location="cpu", weights_only=True)
    except WeightsError:
        raise
    except pickle.UnpicklingError as exc:
        # weights_only refused to build an object: the file would run code or make
        # arbitrary objects if loaded the unsafe way. Never suggest weights_only=False.
        detail = next((line.strip()[:160] for line in str(exc).splitlines() if "GLOBAL" in line or "Unsupported" in line), "")
        raise WeightsError(
            f"refused to load {path.name!r}: it is a pickle that builds objects other than tensors"
            f"{f' ({detail})' if detail else ''}, which could run code; zoo loads plain state dicts only: "
            "re-save it with torch.save(model.state_dict(), ...) or as .safetensors"
        ) from exc
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the user's to fix
        raise WeightsError(
            f"cannot read weights from {path.name!r}: it is truncated or not a {'safetensors' if suffix == '.safetensors' else 'PyTorch'} "
            f"weights file ({one_line(exc, limit=160)}); save one with "
            f"{'safetensors.torch.save_file' if suffix == '.safetensors' else _SAVE}"
        ) from exc
    return _validated(state, path)


def _refuse_expansion(handle: IO[bytes], path: Path) -> None:
    """torch.save writes its zip archive uncompressed, but torch.load inflates
    compressed entries too: a small crafted file could fill the memory. Refuse any
    archive whose entries add up to more than the file's own size."""
    size = os.fstat(handle.fileno()).st_size  # of the file opened, not of what the path once named
    if not zipfile.is_zipfile(handle):
        handle.seek(0)
        return  # legacy (pre-1.6) format: torch checks each declared storage size against the bytes it reads
    try:
        handle.seek(0)
        with zipfile.ZipFile(handle) as archive:
            expanded = sum(entry.file_size for entry in archive.infolist())
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise WeightsError(
            f"cannot read weights from {path.name!r}: it is truncated or not a PyTorch weights file "
            f"({one_line(exc, limit=160)}); save one with {_SAVE}"
        ) from None
    handle.seek(0)
    if expanded > size:
        raise WeightsError(
            f"refused to load {path.name!r}: it is a compressed archive that would expand to {expanded:,} bytes "
            f"from {size:,} on disk; zoo loads the uncompressed files torch.save writes: re-save it with {_SAVE}"
        )


def _validated(state: Any, path: Path) -> dict[str, Any]:
    """The one pass over the file's contents: a mapping of string names to dense,
    strided CPU tensors (``torch.Tensor`` or ``torch.nn.Parameter``), nothing else."""
    import torch

    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]  # checkpoints often wrap the state dict
    if not isinstance(state, dict):
        raise WeightsError(
            f"{path.name!r} is not a state dict (a mapping of names to tensors) but {_a(type(state).__name__)}; save one with {_SAVE}"
        )
    for key, value in state.items():
        if not isinstance(key, str):
            raise WeightsError(
                f"{path.name!r} is not a state dict: key {_show(key)} is {_a(type(key).__name__)}, not a parameter name "
                f"(a string); save one with {_SAVE}"
            )
        if not isinstance(value, torch.Tensor):
            raise WeightsError(
                f"{path.name!r} is not a state dict (a mapping of names to tensors): {_show(key)} holds "
                f"{_a(type(value).__name__)}, not a tensor; save one with {_SAVE}"
            )
        kind = _tensor_kind(value)
        if kind is not None:
            base = kind.split(" ")[0]
            hint = _KIND_HINTS.get(base, f"save plain dense tensors with {_SAVE}")
            raise WeightsError(f"{path.name!r} holds a {kind} tensor at {_show(key)}; only dense tensors are weights: {hint}")
    return state


def _tensor_kind(tensor: Any) -> str | None:
    """``None`` for a dense strided CPU tensor, else what it is ("sparse", "meta", ...)."""
    import torch

    if tensor.is_nested:  # before the layout: a jagged nested tensor has its own layout
        return "nested"
    if tensor.layout != torch.strided:
        layout = dtype_text(tensor.layout)
        return f"sparse ({layout})" if layout.startswith("sparse") else f"non-strided ({layout})"
    if tensor.is_quantized:
        return f"quantized ({str(tensor.dtype).removeprefix('torch.')})"
    if tensor.device.type == "meta":
        return "meta"
    if tensor.device.type != "cpu":
        return f"{tensor.device.type} device"
    if type(tensor) not in (torch.Tensor, torch.nn.Parameter):
        return f"{type(tensor).__name__} subclass"
    return None


def dtype_kind(dtype: Any) -> str:
    """The kind of ``dtype``: float, complex, bool, integer, or other (bit and packed types)."""
    import torch

    if dtype == torch.bool:
        return "bool"
    if dtype.is_complex:
        return "complex"
    if dtype.is_floating_point:
        return "float"
    try:
        torch.iinfo(dtype)
    except TypeError:
        return "other"
    return "integer"


def load_weights(module: Any, path: Path, owner: str) -> dict[str, str]:
    """Load ``path`` into ``module`` strictly; returns ``{"path", "sha256"}`` for reports.

    Each tensor must have the shape and dtype kind of the module's tensor of the same
    name (so an int64 ``num_batches_tracked`` stays int64, and a complex or bool file
    never lands in a float parameter); float widths may differ: torch casts them.
    """
    state = read_state_dict(path)
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(_show(key) for key in set(state) - set(expected))
    mismatched = []
    dtypes = []
    for key, want in expected.items():
        got = state.get(key)
        if got is None:
            continue
        if got.shape != want.shape:
            mismatched.append(f"{key} {_show_shape(got.shape)} != {tuple(want.shape)}")
        elif dtype_kind(got.dtype) != dtype_kind(want.dtype):
            dtypes.append(f"{key} {_short(got.dtype)} (file) != {_short(want.dtype)} (model)")
    problems = []
    if missing:
        problems.append(f"missing keys {_clip(missing)}")
    if unexpected:
        problems.append(f"unexpected keys {_clip(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatches {_clip(mismatched)}")
    if dtypes:
        problems.append(f"dtype mismatches {_clip(dtypes)}")
    if problems:
        hint = (
            "save the weights with the model's own dtypes (float, complex, bool or integer)"
            if dtypes and not (missing or unexpected or mismatched)
            else f"give weights saved from {owner} built with the same --param values"
        )
        raise WeightsError(f"{path.name!r} does not fit {owner}: {'; '.join(problems)}; {hint}")
    module.load_state_dict(state, strict=True)
    return {"path": str(path), "sha256": sha256(path)}


def _show(key: Any, limit: int = 60) -> str:
    """A name from the file, safe for one line: printable, and short."""
    text = key if isinstance(key, str) and key.isprintable() and key else repr(key)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _show_shape(shape: Any, limit: int = 60) -> str:
    text = str(tuple(shape))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _a(noun: str) -> str:
    return f"{'an' if noun[:1].lower() in 'aeiou' else 'a'} {noun}"


def _short(dtype: Any) -> str:
    return dtype_text(dtype)


def _clip(items: list[str], limit: int = 5) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" (+{len(items) - limit} more)" if len(items) > limit else "")
