"""Load a user's trained weights without ever running code from the file.

``.safetensors`` is read with safetensors; ``.pt``/``.pth`` only with
``torch.load(weights_only=True)``, which refuses pickles that build arbitrary objects.
"""

from __future__ import annotations

import hashlib
import pickle
import warnings
from pathlib import Path
from typing import Any

from zoo.errors import WeightsError, one_line

SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_state_dict(path: Path) -> dict[str, Any]:
    import torch

    if not path.is_file():
        raise WeightsError(f"weights file {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise WeightsError(f"weights file {path.name!r}: use a {', '.join(SUFFIXES)} file")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols: not the user's business
            warnings.simplefilter("ignore")
            if suffix == ".safetensors":
                from safetensors.torch import load_file

                state = load_file(str(path), device="cpu")
            else:
                state = torch.load(path, map_location="cpu", weights_only=True)
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
            f"{'safetensors.torch.save_file' if suffix == '.safetensors' else 'torch.save(model.state_dict(), path)'}"
        ) from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]  # checkpoints often wrap the state dict
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path.name!r} is not a state dict (a mapping of names to tensors)")
    return state


def load_weights(module: Any, path: Path, owner: str) -> dict[str, str]:
    """Load ``path`` into ``module`` strictly; returns ``{"path", "sha256"}`` for reports."""
    state = read_state_dict(path)
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = [
        f"{key} {tuple(state[key].shape)} != {tuple(expected[key].shape)}"
        for key in expected
        if key in state and state[key].shape != expected[key].shape
    ]
    problems = []
    if missing:
        problems.append(f"missing keys {_clip(missing)}")
    if unexpected:
        problems.append(f"unexpected keys {_clip(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatches {_clip(mismatched)}")
    if problems:
        raise WeightsError(f"{path.name!r} does not fit {owner}: {'; '.join(problems)}")
    module.load_state_dict(state, strict=True)
    return {"path": str(path), "sha256": sha256(path)}


def _clip(items: list[str], limit: int = 5) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" (+{len(items) - limit} more)" if len(items) > limit else "")
