"""A checkpoint in the Hugging Face transformers format, on classes transformers already has (no custom code).

- learned or sinusoidal positions -> GPT2LMHeadModel: the sinusoidal table is written into its position embedding,
  and our Linear weights are transposed into its Conv1D layout (in, out).
- rotary positions -> GPTNeoXForCausalLM with rotary on the whole head and a sequential residual. We rotate the
  feature pairs (2i, 2i+1); GPT-NeoX rotates feature i with i + head_size/2, by the same angle. Permuting each head's
  query and key features (evens first, then odds) turns one convention into the other and leaves q.k unchanged.
- qk_gain multiplies q.k: it is folded into the query weights. Without biases (`bias: false`) the biases are written
  as zeros. ReLU squared is transformers' `relu2`; our GELU is the exact one, transformers' `gelu`, and its tanh
  approximation (`gelu_tanh`) is `gelu_pytorch_tanh`.
- qk_norm (a LayerNorm without weights on each head's queries and keys) has no counterpart in these classes: refused.
"""

from __future__ import annotations

import json
from typing import Any

import torch
from safetensors.torch import save as safetensors_bytes

from model.config import ModelConfig, model_config_from_dict
from model.export import ExportError
from model.export.tokenizer import tokenizer_files
from model.gpt import sinusoidal_table
from model.tokenizers import tokenizer_from_json

ARCHITECTURES = {"learned": "GPT2LMHeadModel", "sinusoidal": "GPT2LMHeadModel", "rotary": "GPTNeoXForCausalLM"}
# transformers' names (ACT2FN) for exactly our functions
HF_ACTIVATIONS = {"gelu": "gelu", "relu2": "relu2", "gelu_tanh": "gelu_pytorch_tanh"}
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def refusal(config: ModelConfig) -> ExportError | None:
    """Why this configuration cannot be exported to transformers, or None."""
    if config.qk_norm:
        return ExportError("qk_norm", "no transformers class with this model's positions normalises each head's "
                                      "queries and keys with a LayerNorm without weights; train with qk_norm false "
                                      "to export")
    return None


def qkv_parts(w: torch.Tensor, d: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Split a fused qkv weight (3d, ...) or bias (3d,) into its query, key and value parts."""
    return w[:d], w[d:2 * d], w[2 * d:]


def export_weights(config: ModelConfig, sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our state dict with every bias present (zeros where the model has none) and qk_gain folded into the queries."""
    d = config.d_model
    out = {k: v.detach().to(torch.float32).clone() for k, v in sd.items()}
    for name in [k for k in out if k.endswith(".weight")]:
        bias = name[: -len("weight")] + "bias"
        if bias not in out and not name.startswith(("tok_emb", "pos_emb", "head")):
            out[bias] = torch.zeros(out[name].size(0))
    for i in range(config.num_blocks):
        for part in ("weight", "bias"):
            qkv = out[f"blocks.{i}.attn.qkv.{part}"]
            qkv[:d] *= config.qk_gain
    return out


def _gpt2(config: ModelConfig, w: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    pos = w["pos_emb.weight"] if config.positions == "learned" else sinusoidal_table(config.context_length,
                                                                                        config.d_model)
    t = {"transformer.wte.weight": w["tok_emb.weight"], "transformer.wpe.weight": pos}
    for i in range(config.num_blocks):
        ours, theirs = f"blocks.{i}.", f"transformer.h.{i}."
        for a, b, transpose in (("ln1", "ln_1", False), ("ln2", "ln_2", False), ("attn.qkv", "attn.c_attn", True),
                                ("attn.proj", "attn.c_proj", True), ("mlp.fc", "mlp.c_fc", True),
                                ("mlp.proj", "mlp.c_proj", True)):
            weight = w[f"{ours}{a}.weight"]
            t[f"{theirs}{b}.weight"] = weight.t() if transpose else weight
            t[f"{theirs}{b}.bias"] = w[f"{ours}{a}.bias"]
    t["transformer.ln_f.weight"], t["transformer.ln_f.bias"] = w["ln_f.weight"], w["ln_f.bias"]
    if not config.tie_embeddings:
        t["lm_head.weight"] = w["head.weight"]
    hf = {
        "model_type": "gpt2", "n_positions": config.context_length, "n_ctx": config.context_length,
        "n_embd": config.d_model, "n_layer": config.num_blocks, "n_head": config.num_heads,
        "n_inner": config.mlp_ratio * config.d_model,
        "activation_function": HF_ACTIVATIONS[config.activation],
        "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0, "layer_norm_epsilon": 1e-5,
        "scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False, "reorder_and_upcast_attn": False,
    }
    return t, hf


def neox_order(head_size: int) -> torch.Tensor:
    """Feature order within a head that takes our rotary pairs (2i, 2i+1) to GPT-NeoX's (i, i + hs/2)."""
    return torch.cat([torch.arange(0, head_size, 2), torch.arange(1, head_size, 2)])


def _gpt_neox(config: ModelConfig, w: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    nh, hs, d = config.num_heads, config.head_size, config.d_model
    order = neox_order(hs)
    t = {"gpt_neox.embed_in.weight": w["tok_emb.weight"]}
    for i in range(config.num_blocks):
        ours, theirs = f"blocks.{i}.", f"gpt_neox.layers.{i}."
        for part in ("weight", "bias"):
            q, k, v = (x.unflatten(0, (nh, hs)) for x in qkv_parts(w[f"{ours}attn.qkv.{part}"], d))  # (nh, hs, ...)
            # GPT-NeoX reads its fused projection head by head: [q_h, k_h, v_h] for each head h
            t[f"{theirs}attention.query_key_value.{part}"] = torch.cat([q[:, order], k[:, order], v], 1).flatten(0, 1)
        for a, b in (("ln1", "input_layernorm"), ("ln2", "post_attention_layernorm"), ("attn.proj", "attention.dense"),
                     ("mlp.fc", "mlp.dense_h_to_4h"), ("mlp.proj", "mlp.dense_4h_to_h")):
            t[f"{theirs}{b}.weight"], t[f"{theirs}{b}.bias"] = w[f"{ours}{a}.weight"], w[f"{ours}{a}.bias"]
    t["gpt_neox.final_layer_norm.weight"], t["gpt_neox.final_layer_norm.bias"] = w["ln_f.weight"], w["ln_f.bias"]
    if not config.tie_embeddings:
        t["embed_out.weight"] = w["head.weight"]
    hf = {
        "model_type": "gpt_neox", "max_position_embeddings": config.context_length, "hidden_size": d,
        "num_hidden_layers": config.num_blocks, "num_attention_heads": nh,
        "intermediate_size": config.mlp_ratio * d, "hidden_act": HF_ACTIVATIONS[config.activation],
        "rotary_pct": 1.0, "rotary_emb_base": config.rope_base,
        "rope_parameters": {"rope_type": "default", "rope_theta": config.rope_base, "partial_rotary_factor": 1.0},
        "use_parallel_residual": False, "attention_bias": True, "layer_norm_eps": 1e-5,
        "attention_dropout": 0.0, "hidden_dropout": 0.0,
    }
    return t, hf


def hf_files(state: dict[str, Any], dtype: str = "float32") -> dict[str, bytes]:
    """A checkpoint's state (as unpack_checkpoint returns it) -> the files of a transformers model directory."""
    config = model_config_from_dict(state["model_config"])
    refused = refusal(config)
    if refused is not None:
        raise refused
    if dtype not in DTYPES:
        raise ExportError("dtype", f"must be one of {', '.join(DTYPES)}; got {dtype!r}")
    tokenizer = tokenizer_from_json(state["tokenizer"])
    weights = export_weights(config, state["model"])
    tensors, hf = (_gpt_neox if config.positions == "rotary" else _gpt2)(config, weights)
    tensors = {k: v.to(DTYPES[dtype]).contiguous() for k, v in tensors.items()}
    hf.update({
        "architectures": [ARCHITECTURES[config.positions]], "vocab_size": config.vocab_size,
        "tie_word_embeddings": config.tie_embeddings, "bos_token_id": tokenizer.eot_id,
        "eos_token_id": tokenizer.eot_id, "pad_token_id": tokenizer.pad_id, "torch_dtype": dtype, "dtype": dtype,
        "use_cache": True,
    })
    generation = {"bos_token_id": tokenizer.eot_id, "eos_token_id": tokenizer.eot_id,
                  "pad_token_id": tokenizer.pad_id, "max_length": config.context_length}
    metadata = {"format": "pt", "lfz.step": str(state.get("step", "")), "lfz.positions": config.positions}
    return {
        "config.json": json.dumps(hf, indent=2).encode(),
        "generation_config.json": json.dumps(generation, indent=2).encode(),
        "model.safetensors": safetensors_bytes(tensors, metadata=metadata),
        **tokenizer_files(tokenizer, config.context_length),
    }
