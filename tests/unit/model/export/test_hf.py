"""The Hugging Face export, loaded by transformers itself: the same token ids from both tokenizers, the same logits
within 1e-4 in float32, the same 50 greedy tokens, for every kind of positions and of tokenizer."""

from __future__ import annotations

import json
import sysconfig
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from model.config import ModelConfig
from model.export import ExportError
from model.export.hf import hf_files
from model.generate import Generator, SamplingParams
from model.gpt import GPT
from model.tokenizers import train_tokenizer

transformers = pytest.importorskip("transformers", reason="the export is checked by loading it with transformers")

STDLIB = Path(sysconfig.get_paths()["stdlib"])
TEXT = (STDLIB / "textwrap.py").read_text() + (STDLIB / "this.py").read_text()
TOKENIZERS = {"char": {}, "word": {"vocab_size": 400}, "bpe": {"vocab_size": 400}}


def checkpoint(positions: str, tokenizer: str, **options) -> tuple[dict, GPT]:
    tok = train_tokenizer(tokenizer, TEXT, **TOKENIZERS[tokenizer])
    config = ModelConfig(vocab_size=tok.vocab_size, context_length=64, d_model=32, num_heads=4, num_blocks=2,
                         positions=positions, **options)
    torch.manual_seed(7)
    model = GPT(config).eval()
    with torch.no_grad():  # away from the initialisation, so that every weight matters
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return {"model_config": asdict(config), "model": model.state_dict(), "tokenizer": tok.to_json(), "step": 3}, model


def load(files: dict[str, bytes], where: Path):
    for name, data in files.items():
        (where / name).write_bytes(data)
    model = transformers.AutoModelForCausalLM.from_pretrained(where, attn_implementation="eager").eval()
    return model, transformers.AutoTokenizer.from_pretrained(where)


@pytest.mark.parametrize("tokenizer", list(TOKENIZERS))
@pytest.mark.parametrize("positions", ["learned", "sinusoidal", "rotary"])
def test_transformers_loads_the_export_and_computes_what_we_compute(tmp_path, positions, tokenizer):
    state, ours = checkpoint(positions, tokenizer)
    theirs, their_tokenizer = load(hf_files(state), tmp_path)
    assert type(theirs).__name__ == {"rotary": "GPTNeoXForCausalLM"}.get(positions, "GPT2LMHeadModel")

    sample = TEXT[5000:9000] + " ünseen çharacters, 42 <|endoftext|>\n"
    our_tokenizer = train_tokenizer(tokenizer, TEXT, **TOKENIZERS[tokenizer])
    ids = our_tokenizer.encode(sample)
    assert their_tokenizer(sample, add_special_tokens=False)["input_ids"] == ids
    assert their_tokenizer.decode(ids) == our_tokenizer.decode(ids)

    prompts = torch.randint(0, our_tokenizer.vocab_size, (3, 64), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        difference = (ours(prompts)[0] - theirs(prompts).logits).abs().max().item()
    assert difference < 1e-4

    prompt = our_tokenizer.decode(ids[:12])
    greedy = SamplingParams(max_new_tokens=50, temperature=0, ignore_eot=True)
    mine = Generator(ours, our_tokenizer).generate(prompt, greedy)[0].token_ids
    start = torch.tensor([ids[:12]])
    with torch.no_grad():
        out = theirs.generate(start, do_sample=False, max_new_tokens=50, min_new_tokens=50, eos_token_id=None,
                              pad_token_id=our_tokenizer.pad_id, attention_mask=torch.ones_like(start))
    assert out[0, 12:].tolist() == mine


@pytest.mark.parametrize("options", [{"tie_embeddings": False}, {"bias": True}, {"qk_gain": 1.7},
                                     {"activation": "relu2"}, {"activation": "gelu_tanh"},
                                     {"rope_base": 500.0, "mlp_ratio": 2}])
@pytest.mark.parametrize("positions", ["learned", "rotary"])
def test_every_option_that_a_class_expresses_exports_exactly(tmp_path, positions, options):
    state, ours = checkpoint(positions, "bpe", **options)
    theirs, _ = load(hf_files(state), tmp_path)
    prompts = torch.randint(0, ours.config.vocab_size, (2, 64), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert (ours(prompts)[0] - theirs(prompts).logits).abs().max().item() < 1e-4


def test_the_files_name_the_class_and_carry_half_precision_when_asked():
    state, _ = checkpoint("sinusoidal", "char")
    files = hf_files(state, dtype="float16")
    config = json.loads(files["config.json"])
    assert config["architectures"] == ["GPT2LMHeadModel"] and config["dtype"] == "float16"
    assert config["n_positions"] == 64 and config["tie_word_embeddings"] is True
    assert len(files["model.safetensors"]) < len(hf_files(state)["model.safetensors"]) * 0.6
    assert json.loads(files["tokenizer_config.json"])["tokenizer_class"] == "PreTrainedTokenizerFast"


def test_an_option_no_class_expresses_is_refused_by_name():
    state, _ = checkpoint("rotary", "bpe", qk_norm=True)
    with pytest.raises(ExportError) as refused:
        hf_files(state)
    assert refused.value.field == "qk_norm"
    with pytest.raises(ExportError) as refused:
        hf_files(checkpoint("learned", "bpe")[0], dtype="int8")
    assert refused.value.field == "dtype"


@pytest.mark.parametrize("kind", list(TOKENIZERS))
def test_the_exported_tokenizer_agrees_on_any_text(kind):
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from model.export.tokenizer import hf_tokenizer

    ours = train_tokenizer(kind, TEXT, **TOKENIZERS[kind])
    theirs = hf_tokenizer(ours)
    pieces = st.sampled_from(["the", " the", " wrap", "<|endoftext|>", "<|pad|>", "\n", " ", "_", "é", "42"])

    # Characters assigned in Python's Unicode database (a later version may class a newer character otherwise).
    assigned = st.text(st.characters(exclude_categories=("Cn", "Cs")), max_size=12)

    @settings(max_examples=300, deadline=None)
    @given(st.lists(st.one_of(assigned, pieces), max_size=12).map("".join))
    def agrees(text: str) -> None:
        ids = ours.encode(text)
        assert theirs.encode(text, add_special_tokens=False).ids == ids
        assert theirs.decode(ids, skip_special_tokens=False) == ours.decode(ids)

    agrees()
