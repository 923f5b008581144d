"""Importing a transformers directory: every export of ours comes back as the same network and tokenizer, a
directory transformers wrote itself imports, and what our network cannot compute exactly is refused by name."""

from __future__ import annotations

import json
from dataclasses import asdict

import pytest
import torch

from model.checkpoint import load_model
from model.config import ModelConfig
from model.export import ExportError
from model.export.from_hf import state_from_hf
from model.export.hf import hf_files
from model.gpt import GPT
from model.tokenizers import train_tokenizer
from model.trainer import Trainer
from tests.unit.model.export.test_hf import TEXT, TOKENIZERS, checkpoint

transformers = pytest.importorskip("transformers")


@pytest.mark.parametrize("tokenizer", list(TOKENIZERS))
@pytest.mark.parametrize("positions", ["learned", "sinusoidal", "rotary"])
@pytest.mark.parametrize("options", [{}, {"bias": True, "tie_embeddings": False, "qk_gain": 1.5,
                                          "activation": "relu2", "mlp_ratio": 2}])
def test_an_export_imports_as_the_same_model(positions, tokenizer, options):
    state, ours = checkpoint(positions, tokenizer, **options)
    back = state_from_hf(hf_files(state))
    theirs, their_tokenizer = load_model(back)
    config = back["model_config"]
    assert config["positions"] == ("rotary" if positions == "rotary" else "learned")
    assert config["bias"] == options.get("bias", False) and config["tie_embeddings"] == options.get(
        "tie_embeddings", True)
    our_tokenizer = train_tokenizer(tokenizer, TEXT, **TOKENIZERS[tokenizer])
    assert their_tokenizer.kind == tokenizer and their_tokenizer.encode(TEXT) == our_tokenizer.encode(TEXT)
    prompts = torch.randint(0, our_tokenizer.vocab_size, (2, 64), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert (ours(prompts)[0] - theirs(prompts)[0]).abs().max().item() < 1e-5


def test_a_directory_transformers_wrote_imports(tmp_path):
    """Not one of ours: a GPT-2 built and saved by transformers itself, with our tokenizer beside it."""
    tokenizer = train_tokenizer("bpe", TEXT, vocab_size=300)
    config = transformers.GPT2Config(vocab_size=tokenizer.vocab_size, n_positions=32, n_embd=32, n_layer=2, n_head=4,
                                     activation_function="gelu")
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config).eval()
    model.save_pretrained(tmp_path)
    from model.export.tokenizer import hf_tokenizer
    files = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    files["tokenizer.json"] = hf_tokenizer(tokenizer).to_str().encode()
    ours, _ = load_model(state_from_hf(files))
    ids = torch.randint(0, tokenizer.vocab_size, (2, 32), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        assert (ours(ids)[0] - model(ids).logits).abs().max().item() < 1e-4


def test_an_imported_model_trains_further_from_its_weights():
    state, ours = checkpoint("rotary", "char")
    back = state_from_hf(hf_files(state))
    ids = torch.tensor(train_tokenizer("char", TEXT).encode(TEXT[:6000]))
    trainer = Trainer(None, None, ids[:5000], ids[5000:], resume=back)
    assert trainer.step == 0
    prompts = ids[:64][None]
    with torch.no_grad():  # it starts from the imported weights, not from a fresh initialisation
        assert (trainer.model(prompts)[0] - ours(prompts)[0]).abs().max().item() < 1e-5


def _files(positions: str = "learned", **hf_overrides) -> dict[str, bytes]:
    files = hf_files(checkpoint(positions, "bpe")[0])
    config = {**json.loads(files["config.json"]), **hf_overrides}
    return {**files, "config.json": json.dumps(config).encode()}


@pytest.mark.parametrize(("positions", "override", "field"), [
    ("learned", {"activation_function": "silu"}, "activation_function"),
    ("learned", {"layer_norm_epsilon": 1e-6}, "layer_norm_epsilon"),
    ("learned", {"scale_attn_by_inverse_layer_idx": True}, "scale_attn_by_inverse_layer_idx"),
    ("learned", {"model_type": "llama"}, "model_type"),
    ("learned", {"vocab_size": 7}, "vocab_size"),
    ("rotary", {"use_parallel_residual": True}, "use_parallel_residual"),
    ("rotary", {"rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.25}},
     "rotary_pct"),
    ("rotary", {"hidden_act": "silu"}, "hidden_act"),
])
def test_what_our_network_cannot_compute_is_refused_by_name(positions, override, field):
    with pytest.raises(ExportError) as refused:
        state_from_hf(_files(positions, **override))
    assert refused.value.field == field


def test_broken_or_missing_files_are_refused_by_name():
    files = _files()
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        with pytest.raises(ExportError) as refused:
            state_from_hf({k: v for k, v in files.items() if k != name})
        assert refused.value.field == name
    with pytest.raises(ExportError) as refused:
        state_from_hf({**files, "model.safetensors": b"not a safetensors file"})
    assert refused.value.field == "model.safetensors"
    with pytest.raises(ExportError) as refused:
        state_from_hf({**files, "tokenizer.json": b"{"})
    assert refused.value.field == "tokenizer.json"
    lost = {**files, "model.safetensors": hf_files(checkpoint("rotary", "bpe")[0])["model.safetensors"]}
    with pytest.raises(ExportError) as refused:
        state_from_hf(lost)
    assert refused.value.field == "model.safetensors"


def test_an_import_builds_the_network_it_describes():
    back = state_from_hf(_files())
    model = GPT(ModelConfig(**back["model_config"]))
    model.load_state_dict(back["model"])
    assert asdict(model.config) == back["model_config"]
