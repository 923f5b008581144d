"""A checkpoint as one GGUF file, the format llama.cpp loads, on architectures llama.cpp already has.

- learned or sinusoidal positions -> llama.cpp's `gpt2`: the sinusoidal table is written as its position embedding.
- rotary positions -> `gptneox`, with rotary on the whole head (rope dimension count = head size, frequency base =
  rope_base, NEOX rotation) and a sequential residual (`use_parallel_residual` false).
- Every matrix keeps our Linear layout (out, in), which GGUF stores as ggml's (in, out) without moving a byte. The
  fused qkv keeps our rows [q of all heads | k | v], the order both graphs split it in. For `gptneox` each head's
  query and key features are permuted (evens first, then odds): we rotate the pairs (2i, 2i+1), the NEOX rotation
  pairs feature i with i + head_size/2 at the same angle, and the permutation leaves q.k unchanged.
- qk_gain multiplies q.k: it is folded into the query weights and bias. Without biases (`bias: false`) the biases
  are written as zeros; both graphs require them. `output.weight` is always written (a copy of the token embedding
  when the two are tied): `gptneox` requires it and `gpt2` reads it when present.
- float32 writes every tensor in f32; float16 writes the matrices (embeddings included) in f16 and keeps norms and
  biases in f32.
- Only byte-level BPE exports: its vocabulary, token types (our three specials are control tokens) and merges are
  written as llama.cpp's `gpt2` tokenizer with the GPT-2 pre-tokenizer, which splits text as ours does.

Refused, each with an ExportError naming the field:
- qk_norm: neither graph normalises each head's queries and keys.
- activation relu2: both graphs apply GELU in the feed-forward.
- char and word tokenizers: llama.cpp has no vocabulary of whole pieces with a fall-back to characters.

llama.cpp's GELU is the tanh approximation: a model trained with `activation: gelu_tanh` computes in llama.cpp
what it computes here; one with the exact GELU (`gelu`) differs by that much (about 1e-3 in the logits of small
models), beyond the rounding of the weights.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import gguf
import torch

from model.config import ModelConfig, model_config_from_dict
from model.export import ExportError
from model.export.hf import export_weights, neox_order, qkv_parts
from model.gpt import sinusoidal_table
from model.tokenizers import SPECIALS, BPETokenizer, Tokenizer, tokenizer_from_json

NAME = "llm-from-zero"
ARCHITECTURES = {"learned": gguf.MODEL_ARCH.GPT2, "sinusoidal": gguf.MODEL_ARCH.GPT2,
                 "rotary": gguf.MODEL_ARCH.GPTNEOX}
FILE_TYPES = {"float32": gguf.LlamaFileType.ALL_F32, "float16": gguf.LlamaFileType.MOSTLY_F16}
LAYER_NORM_EPS = 1e-5
T = gguf.MODEL_TENSOR
# our module -> llama.cpp's tensor, in each block; each has a weight and a bias
BLOCK = (("ln1", T.ATTN_NORM), ("attn.proj", T.ATTN_OUT), ("ln2", T.FFN_NORM), ("mlp.fc", T.FFN_UP),
         ("mlp.proj", T.FFN_DOWN))



def architecture_name(config: ModelConfig) -> str:
    """llama.cpp's name of the graph this model's file is written for: gpt2 or gptneox."""
    return gguf.MODEL_ARCH_NAMES[ARCHITECTURES[config.positions]]

def refusal(config: ModelConfig, tokenizer: Tokenizer) -> ExportError | None:
    """Why this model cannot be exported to GGUF, or None."""
    if config.qk_norm:
        return ExportError("qk_norm", "llama.cpp's gpt2 and gptneox graphs do not normalise each head's queries and "
                                      "keys; train with qk_norm false to export GGUF")
    if config.activation not in ("gelu", "gelu_tanh"):
        return ExportError("activation", f"llama.cpp's gpt2 and gptneox graphs apply GELU, not "
                                         f"{config.activation}; train with activation gelu_tanh (llama.cpp's "
                                         f"own) or gelu to export GGUF")
    if not isinstance(tokenizer, BPETokenizer):
        return ExportError("tokenizer", f"llama.cpp has no vocabulary like our {tokenizer.kind} tokenizer's; train "
                                        f"with the bpe tokenizer to export GGUF")
    if tokenizer.vocab_size != config.vocab_size:
        return ExportError("vocab_size", f"the model has {config.vocab_size} tokens, its tokenizer "
                                         f"{tokenizer.vocab_size}")
    return None


def _name(tensor: gguf.MODEL_TENSOR, part: str, block: int | None = None) -> str:
    return f"{gguf.TENSOR_NAMES[tensor].format(bid=block)}.{part}"


def _tensors(config: ModelConfig, w: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our weights (every bias present, qk_gain folded) under llama.cpp's names, in our Linear layout."""
    nh, hs, d = config.num_heads, config.head_size, config.d_model
    t = {_name(T.TOKEN_EMBD, "weight"): w["tok_emb.weight"]}
    if config.positions == "learned":
        t[_name(T.POS_EMBD, "weight")] = w["pos_emb.weight"]
    elif config.positions == "sinusoidal":
        t[_name(T.POS_EMBD, "weight")] = sinusoidal_table(config.context_length, d)
    order = neox_order(hs)
    for i in range(config.num_blocks):
        for part in ("weight", "bias"):
            qkv = w[f"blocks.{i}.attn.qkv.{part}"]
            if config.positions == "rotary":
                q, k, v = (x.unflatten(0, (nh, hs)) for x in qkv_parts(qkv, d))  # (nh, hs, ...)
                qkv = torch.cat([q[:, order].flatten(0, 1), k[:, order].flatten(0, 1), v.flatten(0, 1)])
            t[_name(T.ATTN_QKV, part, i)] = qkv
            for ours, theirs in BLOCK:
                t[_name(theirs, part, i)] = w[f"blocks.{i}.{ours}.{part}"]
    t[_name(T.OUTPUT_NORM, "weight")], t[_name(T.OUTPUT_NORM, "bias")] = w["ln_f.weight"], w["ln_f.bias"]
    t[_name(T.OUTPUT, "weight")] = w["head.weight"]  # the token embedding itself when tied
    return t


def _vocabulary(tokenizer: BPETokenizer) -> tuple[list[str], list[int], list[str]]:
    """Tokens by id, their types, and the merges (`a b`, in order of priority)."""
    vocab = tokenizer.hf.get_vocab(with_added_tokens=True)
    tokens = sorted(vocab, key=vocab.__getitem__)
    if [vocab[s] for s in tokens] != list(range(len(tokens))):
        raise ExportError("tokenizer", "the BPE vocabulary's ids are not 0 .. n-1")
    types = [gguf.TokenType.CONTROL if i < len(SPECIALS) else gguf.TokenType.NORMAL for i in range(len(tokens))]
    merges = json.loads(tokenizer.hf.to_str())["model"]["merges"]
    return tokens, [int(x) for x in types], [m if isinstance(m, str) else " ".join(m) for m in merges]


def _metadata(writer: gguf.GGUFWriter, config: ModelConfig, tokenizer: BPETokenizer, dtype: str) -> None:
    writer.add_name(NAME)
    writer.add_file_type(FILE_TYPES[dtype])
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_context_length(config.context_length)
    writer.add_embedding_length(config.d_model)
    writer.add_block_count(config.num_blocks)
    writer.add_feed_forward_length(config.mlp_ratio * config.d_model)
    writer.add_head_count(config.num_heads)
    writer.add_layer_norm_eps(LAYER_NORM_EPS)
    if config.positions == "rotary":
        writer.add_rope_dimension_count(config.head_size)
        writer.add_rope_freq_base(config.rope_base)
        writer.add_parallel_residual(False)
    tokens, types, merges = _vocabulary(tokenizer)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_bos_token_id(tokenizer.eot_id)
    writer.add_eos_token_id(tokenizer.eot_id)
    writer.add_pad_token_id(tokenizer.pad_id)
    writer.add_unk_token_id(tokenizer.unk_id)
    writer.add_add_bos_token(False)
    writer.add_add_eos_token(False)


def gguf_bytes(state: dict[str, Any], dtype: str = "float32") -> bytes:
    """A checkpoint's state (as unpack_checkpoint returns it) -> the bytes of a GGUF file for llama.cpp."""
    config = model_config_from_dict(state["model_config"])
    if dtype not in FILE_TYPES:
        raise ExportError("dtype", f"must be one of {', '.join(FILE_TYPES)}; got {dtype!r}")
    tokenizer = tokenizer_from_json(state["tokenizer"])
    refused = refusal(config, tokenizer)
    if refused is not None:
        raise refused
    tensors = _tensors(config, export_weights(config, state["model"]))
    with tempfile.TemporaryDirectory(prefix="lfz-gguf-") as where:  # the writer only writes to a path
        path = Path(where) / "model.gguf"
        writer = gguf.GGUFWriter(path, architecture_name(config))
        _metadata(writer, config, tokenizer, dtype)
        for name, tensor in tensors.items():
            half = dtype == "float16" and tensor.dim() == 2
            writer.add_tensor(name, tensor.to(torch.float16 if half else torch.float32).contiguous().numpy())
        try:
            writer.write_header_to_file()
            writer.write_kv_data_to_file()
            writer.write_tensors_to_file()
        finally:
            writer.close()
        return path.read_bytes()
