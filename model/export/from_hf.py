"""A Hugging Face transformers model directory read back as one of our checkpoints: the inverse of hf.py.

Takes `config.json`, `model.safetensors` and `tokenizer.json` (as bytes) of a GPT2LMHeadModel or a
GPTNeoXForCausalLM and returns the checkpoint state a training run would have written at step 0, weights only (a
run that continues it starts its optimiser afresh). What our network cannot compute exactly is refused by name,
never approximated: another activation than GELU (exact or tanh) or ReLU squared, partial rotary, GPT-NeoX's parallel
residual, another LayerNorm epsilon, attention scaled per layer, a head with a bias.

GPT-2 positions come back as learned positions (an exported sinusoidal table is the same numbers). Biases that are
all zero (what hf.py writes for `bias: false`) come back as a model without biases.

The tokenizer must be one of ours: byte-level BPE with <|endoftext|>, <|pad|>, <|unk|> at ids 0, 1, 2, or the
WordLevel vocabulary hf.py writes for char and word (its pieces are read back in id order).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

import torch
from safetensors.torch import load as safetensors_load
from tokenizers import Tokenizer as HFTokenizer

from model.config import ConfigError, ModelConfig, TrainConfig
from model.export import ExportError
from model.export.hf import neox_order
from model.tokenizers import SPECIALS, BPETokenizer, PieceTokenizer, Tokenizer
from model.trainer import CHECKPOINT_FORMAT

# transformers' activations that our network computes: tanh-approximated GELU in any of its spellings
ACTIVATIONS = {"gelu": "gelu", "relu2": "relu2", "gelu_pytorch_tanh": "gelu_tanh", "gelu_new": "gelu_tanh",
               "gelu_fast": "gelu_tanh"}
REQUIRED = ("config.json", "model.safetensors", "tokenizer.json")


def _check(ok: bool, field: str, message: str) -> None:
    if not ok:
        raise ExportError(field, message)


def read_tokenizer(data: bytes) -> Tokenizer:
    try:
        hf = HFTokenizer.from_str(data.decode("utf-8"))
        spec = json.loads(data)
    except Exception as error:  # noqa: BLE001 - the library raises plain Exceptions for bad JSON
        raise ExportError("tokenizer.json", f"not a tokenizers JSON ({error})") from None
    kind = (spec.get("model") or {}).get("type")
    if kind == "BPE":
        try:
            return BPETokenizer(hf)
        except ValueError as error:
            raise ExportError("tokenizer.json", f"{error}: only tokenizers made here import") from None
    if kind == "WordLevel":
        pieces = [p for p, _ in sorted(hf.get_vocab(with_added_tokens=True).items(), key=lambda item: item[1])]
        ids = sorted(hf.get_vocab(with_added_tokens=True).values())
        _check(tuple(pieces[:len(SPECIALS)]) == SPECIALS and ids == list(range(len(pieces))),
               "tokenizer.json", f"a WordLevel vocabulary must hold {', '.join(SPECIALS)} at ids 0, 1, 2, then ids "
                                 "without gaps")
        rest = pieces[len(SPECIALS):]
        chars = [p for p in rest if len(p) == 1]
        words = rest[len(chars):]
        _check(all(len(w) > 1 for w in words), "tokenizer.json", "characters must come before words in the vocabulary")
        return PieceTokenizer("word" if words else "char", chars, words)
    raise ExportError("tokenizer.json", f"a {kind} tokenizer does not import; byte-level BPE and WordLevel do")


def _block_map(positions: str) -> tuple[str, list[tuple[str, str, bool]]]:
    if positions == "rotary":
        return "gpt_neox.layers.{i}.", [("ln1", "input_layernorm", False), ("ln2", "post_attention_layernorm", False),
                                        ("attn.proj", "attention.dense", False), ("mlp.fc", "mlp.dense_h_to_4h", False),
                                        ("mlp.proj", "mlp.dense_4h_to_h", False)]
    return "transformer.h.{i}.", [("ln1", "ln_1", False), ("ln2", "ln_2", False), ("attn.qkv", "attn.c_attn", True),
                                  ("attn.proj", "attn.c_proj", True), ("mlp.fc", "mlp.c_fc", True),
                                  ("mlp.proj", "mlp.c_proj", True)]


def _config(hf: dict[str, Any], vocab_size: int) -> tuple[ModelConfig, dict[str, Any]]:
    """Our ModelConfig for a transformers config, and the transformers names of the shared fields."""
    kind = hf.get("model_type")
    if kind == "gpt2":
        act = hf.get("activation_function", "gelu_new")
        _check(act in ACTIVATIONS, "activation_function", f"{act!r}: our network computes GELU (exact or tanh) or ReLU squared")
        _check(hf.get("layer_norm_epsilon", 1e-5) == 1e-5, "layer_norm_epsilon", "must be 1e-05")
        _check(hf.get("scale_attn_weights", True) and not hf.get("scale_attn_by_inverse_layer_idx", False),
               "scale_attn_by_inverse_layer_idx", "attention must be scaled by 1/sqrt(head size) alone")
        d = hf["n_embd"]
        shape = dict(d_model=d, num_heads=hf["n_head"], num_blocks=hf["n_layer"], context_length=hf["n_positions"],
                     mlp=hf.get("n_inner") or 4 * d, activation=ACTIVATIONS[act], positions="learned")
    elif kind == "gpt_neox":
        act = hf.get("hidden_act", "gelu")
        _check(act in ACTIVATIONS, "hidden_act", f"{act!r}: our network computes GELU (exact or tanh) or ReLU squared")
        rope = hf.get("rope_parameters") or {}
        partial = rope.get("partial_rotary_factor", hf.get("rotary_pct", 0.25))
        _check(partial == 1.0, "rotary_pct", f"{partial}: our rotary positions turn the whole head")
        _check(rope.get("rope_type", "default") == "default", "rope_type", "only the default rotary positions import")
        _check(hf.get("use_parallel_residual", True) is False, "use_parallel_residual",
               "our blocks add attention and feed-forward one after the other")
        _check(hf.get("layer_norm_eps", 1e-5) == 1e-5, "layer_norm_eps", "must be 1e-05")
        d = hf["hidden_size"]
        shape = dict(d_model=d, num_heads=hf["num_attention_heads"], num_blocks=hf["num_hidden_layers"],
                     context_length=hf["max_position_embeddings"], mlp=hf["intermediate_size"],
                     activation=ACTIVATIONS[act], positions="rotary",
                     rope_base=float(rope.get("rope_theta", hf.get("rotary_emb_base", 10000.0))))
    else:
        raise ExportError("model_type", f"{kind!r} does not import; gpt2 and gpt_neox do")
    _check(shape["mlp"] % d == 0, "intermediate_size", f"{shape['mlp']} is not a multiple of the width {d}")
    _check(hf.get("vocab_size", vocab_size) == vocab_size, "vocab_size",
           f"config.json says {hf.get('vocab_size')}, the tokenizer holds {vocab_size}")
    mlp = shape.pop("mlp")
    try:
        config = ModelConfig(vocab_size=vocab_size, mlp_ratio=mlp // d, tie_embeddings=bool(
            hf.get("tie_word_embeddings", kind == "gpt2")), bias=True, **shape)
    except ConfigError as error:
        raise ExportError(error.field, error.message) from None
    return config, hf


def _weights(config: ModelConfig, t: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    rotary = config.positions == "rotary"
    prefix, pairs = _block_map(config.positions)
    nh, hs = config.num_heads, config.head_size
    top = "gpt_neox." if rotary else "transformer."
    sd = {"tok_emb.weight": t[f"{top}{'embed_in' if rotary else 'wte'}.weight"]}
    if not rotary:
        sd["pos_emb.weight"] = t["transformer.wpe.weight"]
    back = torch.argsort(neox_order(hs))
    for i in range(config.num_blocks):
        theirs = prefix.format(i=i)
        for ours, name, transposed in pairs:
            weight = t[f"{theirs}{name}.weight"]
            sd[f"blocks.{i}.{ours}.weight"] = weight.t() if transposed else weight
            sd[f"blocks.{i}.{ours}.bias"] = t[f"{theirs}{name}.bias"]
        if rotary:
            for part in ("weight", "bias"):
                fused = t[f"{theirs}attention.query_key_value.{part}"].unflatten(0, (nh, 3 * hs))  # per head q, k, v
                q, k, v = fused[:, :hs][:, back], fused[:, hs:2 * hs][:, back], fused[:, 2 * hs:]
                sd[f"blocks.{i}.attn.qkv.{part}"] = torch.cat([q.flatten(0, 1), k.flatten(0, 1), v.flatten(0, 1)])
    sd["ln_f.weight"], sd["ln_f.bias"] = t[f"{top}{'final_layer_norm' if rotary else 'ln_f'}.weight"], \
        t[f"{top}{'final_layer_norm' if rotary else 'ln_f'}.bias"]
    head = "embed_out.weight" if rotary else "lm_head.weight"
    sd["head.weight"] = sd["tok_emb.weight"] if config.tie_embeddings else t.get(head, t.get("lm_head.weight"))
    _check(sd["head.weight"] is not None, head, "the output head's weights are missing")
    return {k: v.to(torch.float32).contiguous() for k, v in sd.items()}


def state_from_hf(files: dict[str, bytes]) -> dict[str, Any]:
    """The files of a transformers model directory -> a checkpoint state (step 0, weights only)."""
    for name in REQUIRED:
        _check(name in files, name, "missing: a model directory needs config.json, model.safetensors, tokenizer.json")
    try:
        hf = json.loads(files["config.json"])
        tensors = safetensors_load(files["model.safetensors"])
    except Exception as error:  # noqa: BLE001 - JSON and safetensors raise their own kinds
        raise ExportError("model.safetensors", f"does not load ({error})") from None
    tokenizer = read_tokenizer(files["tokenizer.json"])
    config, _ = _config(hf, tokenizer.vocab_size)
    try:
        weights = _weights(config, tensors)
    except KeyError as error:
        raise ExportError("model.safetensors", f"tensor {error} is missing for {hf['model_type']}") from None
    biases = [v for k, v in weights.items() if k.endswith(".bias")]
    if all(not b.any() for b in biases):  # written as zeros for a model without biases
        config = ModelConfig(**{**asdict(config), "bias": False})
        weights = {k: v for k, v in weights.items() if not k.endswith(".bias")}
    if config.tie_embeddings:
        weights["head.weight"] = weights["tok_emb.weight"]
    return {"format": CHECKPOINT_FORMAT, "step": 0, "model_config": asdict(config),
            "train_config": asdict(TrainConfig()), "model": weights, "tokenizer": tokenizer.to_json(),
            "imported_from": hf.get("architectures", [hf.get("model_type")])[0]}
