"""Real Hugging Face models (small configs, random weights, nothing downloaded):
checkpoints as transformers saves them, and a training-only parameter."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from zoo.host.manager import load_zoo

transformers = pytest.importorskip("transformers")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
import hf_models  # noqa: E402
from hf_models import gpt2  # noqa: E402


@pytest.fixture(scope="module")
def hf_zoo():
    return load_zoo(entry_points=False, extra=[("hf", hf_models)])


def test_a_save_pretrained_gpt2_loads_with_its_tied_head_filled(run, hf_zoo, tmp_path: Path) -> None:
    torch.manual_seed(7)
    gpt2().save_pretrained(tmp_path / "gpt2")  # stores lm_head.weight once, as transformer.wte.weight
    from safetensors.torch import load_file

    saved = load_file(tmp_path / "gpt2" / "model.safetensors")
    assert "lm_head.weight" not in saved and "transformer.wte.weight" in saved
    result = run("export", "hf-gpt2", "--weights", "gpt2/model.safetensors", zoo=hf_zoo)
    assert result.exit_code == 0, result.output
    assert "1 tied parameter stored once: filled lm_head.weight from transformer.wte.weight" in result.stderr
    # the trained (here: seed 7) weights were loaded, not seed 0's
    from zoo.build.model import build_model

    built = build_model(hf_zoo.architecture("hf-gpt2"), weights=tmp_path / "gpt2" / "model.safetensors")
    assert torch.equal(built.module.transformer.wte.weight, saved["transformer.wte.weight"])
    assert built.module.lm_head.weight.data_ptr() == built.module.transformer.wte.weight.data_ptr()


def test_a_key_missing_for_another_reason_is_still_refused(run, hf_zoo, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    state = {k: v.contiguous() for k, v in gpt2().state_dict().items() if k not in ("lm_head.weight", "transformer.ln_f.bias")}
    save_file(state, tmp_path / "partial.safetensors")
    result = run("export", "hf-gpt2", "--weights", "partial.safetensors", zoo=hf_zoo)
    assert result.exit_code == 2
    assert "missing keys transformer.ln_f.bias" in result.stderr and "lm_head" not in result.stderr


def test_a_prefix_on_every_key_is_recognised(run, hf_zoo, tmp_path: Path) -> None:
    torch.save({f"model.{k}": v for k, v in gpt2().state_dict().items()}, tmp_path / "wrapped.pt")
    result = run("export", "hf-gpt2", "--weights", "wrapped.pt", zoo=hf_zoo)
    assert result.exit_code == 0, result.output
    assert "every key starts with 'model.'" in result.stderr


def test_wav2vec2_with_its_defaults_passes_check_with_a_warning(run, hf_zoo) -> None:
    result = run("check", "hf-wav2vec2", zoo=hf_zoo)
    assert result.exit_code == 0, result.output
    assert "1 parameter unused in eval mode: wav2vec2.masked_spec_embed" in result.stdout
    assert "all gradients finite" in result.stdout


def test_gpt2_takes_its_attention_mask_by_keyword_in_pytorch_and_the_export(run, hf_zoo, tmp_path: Path) -> None:
    import onnx

    result = run("export", "hf-gpt2-mask", zoo=hf_zoo)
    assert result.exit_code == 0, result.output
    graph = onnx.load(str(tmp_path / "hf-gpt2-mask.onnx")).graph
    assert [i.name for i in graph.input] == ["input_ids", "attention_mask"]
    # the mask reached attention_mask=: padding changes the logits of real tokens' neighbours' rows
    from zoo.build.model import build_model

    built = build_model(hf_zoo.architecture("hf-gpt2-mask"))
    inputs = built.sample_inputs({"batch": 4, "seq": 8})
    assert (inputs["attention_mask"] == 0).any()
    masked = built.forward(inputs)["logits"]
    unmasked = built.forward({**inputs, "attention_mask": torch.ones_like(inputs["attention_mask"])})["logits"]
    assert not torch.allclose(masked, unmasked)


@pytest.mark.parametrize(("flag", "variant"), [("--quantize", "int8"), ("--precision", "fp16")])
def test_a_transformer_variant_re_verifies(run, hf_zoo, tmp_path: Path, flag: str, variant: str) -> None:
    exported = run("export", "hf-distilbert-cls", flag, variant, zoo=hf_zoo)
    assert exported.exit_code == 0, exported.output
    verified = run("verify", f"hf-distilbert-cls.{variant}.onnx", zoo=hf_zoo)
    assert verified.exit_code == 0, verified.output
    assert f"variant   {variant}" in verified.stdout


def test_gpt2_with_use_cache_exports_its_key_value_cache_as_outputs(run, hf_zoo, tmp_path: Path) -> None:
    import json

    import onnx

    result = run("export", "hf-gpt2-cache", "--json", zoo=hf_zoo)
    assert result.exit_code == 0, result.output
    names = ["logits", *(f"present_{layer}_{kind}" for layer in range(2) for kind in ("key", "value"))]
    assert [o.name for o in onnx.load(tmp_path / "hf-gpt2-cache.onnx").graph.output] == names
    cases = json.loads(result.stdout)["verification"]["cases"]
    assert len(cases) == 6 and all(list(case["outputs"]) == names for case in cases)
    key = cases[0]["outputs"]["present_0_key"]
    assert key["max_abs"] < 1e-5  # batch 2, 4 heads, seq 8, head size 16: a real cache, verified
    assert run("verify", "hf-gpt2-cache.onnx", zoo=hf_zoo).exit_code == 0
