"""Hugging Face architectures built from small configs (never downloaded), as a plugin
module: ``zoo --plugin examples/hf_models.py list hf`` (zoo itself does not depend on
transformers). ``python examples/hf_models.py gpt2 FOLDER`` writes one with
``save_pretrained`` (seed 0), as a checkpoint for ``--weights``."""

from __future__ import annotations

from zoo import Architecture, Dim, Input, Output, hookimpl

VOCAB = 1000


def gpt2(n_layer: int = 2, n_embd: int = 64) -> object:
    """GPT-2 with a language-model head tied to its token embedding."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=VOCAB, n_positions=64, n_embd=n_embd, n_layer=n_layer, n_head=4,
        use_cache=False, bos_token_id=0, eos_token_id=0,
    )
    return GPT2LMHeadModel(config)


def gpt2_with_cache(n_embd: int = 64) -> object:
    """GPT-2 that returns its key/value cache (``use_cache=True``): a ``DynamicCache``
    in its ``cache`` output (from transformers 5.25), one ``layers[i].keys``/``.values`` pair per layer."""
    model = gpt2(n_layer=CACHE_LAYERS, n_embd=n_embd)
    model.config.use_cache = True
    return model


CACHE_LAYERS = 2


def distilbert(n_layers: int = 2, dim: int = 64, n_labels: int = 3) -> object:
    """DistilBERT sequence classifier."""
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    config = DistilBertConfig(
        vocab_size=VOCAB, max_position_embeddings=64, n_layers=n_layers, n_heads=4, dim=dim, hidden_dim=4 * dim, num_labels=n_labels,
    )
    return DistilBertForSequenceClassification(config)


def wav2vec2(hidden: int = 32) -> object:
    """Wav2Vec2 for CTC with Hugging Face's defaults but small: its
    ``masked_spec_embed`` is used only in training."""
    from transformers import Wav2Vec2Config, Wav2Vec2ForCTC

    config = Wav2Vec2Config(
        vocab_size=32, hidden_size=hidden, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        conv_dim=(16, 16), conv_stride=(5, 2), conv_kernel=(10, 3), num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4, do_stable_layer_norm=False,
    )
    return Wav2Vec2ForCTC(config)


def padded_mask(sizes, generator, params):
    """Token ids and a right-padded attention mask, at least one real token a row."""
    import torch

    batch, seq = sizes["batch"], sizes["seq"]
    ids = torch.randint(0, VOCAB, (batch, seq), generator=generator)
    lengths = torch.randint(1, seq + 1, (batch,), generator=generator)
    mask = (torch.arange(seq)[None, :] < lengths[:, None]).long()
    return {"input_ids": ids, "attention_mask": mask}


@hookimpl
def register_architectures(register):
    register(Architecture(
        "hf-gpt2", gpt2,
        (Input("input_ids", ("batch", Dim("seq", min=2, max=64, sample=8)), dtype="int64", range=(0, VOCAB)),),
        (Output("logits", task="multiclass"),),
        summary="Hugging Face GPT-2 (tied lm_head), small config",
    ))
    seq = Dim("seq", min=2, max=64, sample=8)
    register(Architecture(
        "hf-gpt2-mask", gpt2,
        (Input("input_ids", ("batch", seq), dtype="int64", range=(0, VOCAB)),
         Input("attention_mask", ("batch", seq), dtype="int64", range=(0, 2))),
        (Output("logits", task="multiclass"),),
        summary="GPT-2 with an attention mask, passed by keyword (its second parameter is past_key_values)",
        sample_inputs=padded_mask, keyword_inputs=True,
    ))
    register(Architecture(
        "hf-gpt2-cache", gpt2_with_cache,
        (Input("input_ids", ("batch", seq), dtype="int64", range=(0, VOCAB)),),
        (Output("logits", task="multiclass"),
         *(Output(f"present_{layer}_{kind}", path=f"cache.layers.{layer}.{kind}s")
           for layer in range(CACHE_LAYERS) for kind in ("key", "value"))),
        summary="GPT-2 with use_cache=True: its key/value cache exported as outputs, picked by path",
    ))
    register(Architecture(
        "hf-distilbert-cls", distilbert,
        (Input("input_ids", ("batch", seq), dtype="int64", range=(0, VOCAB)),
         Input("attention_mask", ("batch", seq), dtype="int64", range=(0, 2))),
        (Output("logits", task="multiclass"),),
        summary="Hugging Face DistilBERT sequence classifier, small config",
        sample_inputs=padded_mask, keyword_inputs=True,
    ))
    register(Architecture(
        "hf-wav2vec2", wav2vec2,
        (Input("input_values", ("batch", Dim("samples", min=400, max=4000, sample=800))),),
        (Output("logits"),),
        summary="Hugging Face Wav2Vec2 for CTC, small config, default masking",
    ))


MODELS = {"gpt2": gpt2, "distilbert": distilbert, "wav2vec2": wav2vec2}

if __name__ == "__main__":
    import sys

    import torch
    from transformers.utils import logging

    logging.disable_progress_bar()  # one line of output, not a progress bar per shard
    if len(sys.argv) != 3 or sys.argv[1] not in MODELS:
        sys.exit(f"usage: python {sys.argv[0]} {{{','.join(MODELS)}}} FOLDER")
    torch.manual_seed(0)
    MODELS[sys.argv[1]]().save_pretrained(sys.argv[2])
    print(f"wrote {sys.argv[2]}/ ({sys.argv[1]}, seed 0, save_pretrained)")
