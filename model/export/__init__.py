"""A model leaves the system: its checkpoint written in formats other programs load.

    hf         Hugging Face transformers: config.json, model.safetensors, tokenizer.json (GPT2LMHeadModel or
               GPTNeoXForCausalLM, never custom code)
    tokenizer  our tokenizers as a `tokenizers` JSON that gives the same ids

Every export returns its files as bytes (name -> bytes): writing them anywhere is the caller's business. An option
that no target can express is refused with an ExportError naming it, never exported wrongly.
"""

from __future__ import annotations

FORMATS = ("hf", "gguf")


class ExportError(ValueError):
    """The model cannot be written in the format asked for. `field` names the option that prevents it."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
