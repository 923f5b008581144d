"""The tokenized corpus: train/validation split and random batches of (input, shifted target) windows.

The batch sampler owns its random generator, so its state can be checkpointed and a resumed run draws exactly
the batches an uninterrupted run would have drawn.
"""

from __future__ import annotations

import torch

from model.config import ConfigError
from model.tokenizers import Tokenizer


def prepare_corpus(text: str, tokenizer: Tokenizer, val_fraction: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokenize and split: the first (1 - val_fraction) of the tokens train, the rest validate. -> (N,), (M,)."""
    if not 0.0 < val_fraction < 1.0:
        raise ConfigError("val_fraction", f"must be in (0, 1), got {val_fraction}")
    ids = torch.tensor(tokenizer.encode(text), dtype=torch.long)
    n = int(len(ids) * (1.0 - val_fraction))
    return ids[:n], ids[n:]


def check_split(ids: torch.Tensor, context_length: int, name: str) -> None:
    if ids.dim() != 1:
        raise ValueError(f"{name} ids must be one-dimensional, got shape {tuple(ids.shape)}")
    if len(ids) < 2:
        raise ConfigError("dataset", f"the {name} split holds {len(ids)} tokens; at least 2 are needed")


class BatchSampler:
    """Random windows of a token sequence: x (B, T) and y (B, T), y being x shifted left by one token."""

    def __init__(self, ids: torch.Tensor, batch_size: int, context_length: int, seed: int, device="cpu"):
        self.ids = ids.long()
        self.batch_size = batch_size
        # A corpus shorter than the context gives shorter windows rather than an error.
        self.window = min(context_length, len(ids) - 1)
        self.offsets = torch.arange(self.window + 1)  # (T+1,)
        self.device = torch.device(device)
        self.generator = torch.Generator().manual_seed(seed)

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        starts = torch.randint(len(self.ids) - self.window, (self.batch_size,), generator=self.generator)
        chunk = self.ids[starts[:, None] + self.offsets]  # (B, T+1)
        if self.device.type == "cuda":
            chunk = chunk.pin_memory().to(self.device, non_blocking=True)
        elif self.device.type != "cpu":
            chunk = chunk.to(self.device)
        return chunk[:, :-1], chunk[:, 1:]

    def state(self) -> torch.Tensor:
        return self.generator.get_state()

    def load_state(self, state: torch.Tensor) -> None:
        self.generator.set_state(state)


def sequential_windows(ids: torch.Tensor, context_length: int, batch_size: int):
    """Every token of `ids` after the first is predicted exactly once. Yields x (b, T), y (b, T) with targets
    -1 (ignored) where the last window is short."""
    n = len(ids) - 1
    for start in range(0, n, context_length * batch_size):
        xs, ys = [], []
        for s in range(start, min(start + context_length * batch_size, n), context_length):
            end = min(s + context_length, n)
            x, y = ids[s:end], ids[s + 1:end + 1]
            if len(x) < context_length:  # pad the last window; its padded targets are ignored
                pad = context_length - len(x)
                x = torch.cat([x, x.new_zeros(pad)])
                y = torch.cat([y, y.new_full((pad,), -1)])
            xs.append(x)
            ys.append(y)
        yield torch.stack(xs), torch.stack(ys)
