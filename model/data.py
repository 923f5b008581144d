"""The tokenized corpus: train/validation split and random batches of (input, shifted target) windows.

A corpus is either a tensor of token ids (small ones, tokenized in the process) or a `TokenSequence`: a read-only
view of several integer arrays end to end, typically memory-mapped token shards, so that a corpus of gigabytes is
read from disk a batch at a time and never copied into the process's memory.

The batch sampler owns its random generator, so its state can be checkpointed and a resumed run draws exactly
the batches an uninterrupted run would have drawn; it draws the same batches from a tensor and from a
`TokenSequence` of the same tokens.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from model.config import ConfigError
from model.tokenizers import Tokenizer


class TokenSequence:
    """The concatenation of 1-D integer arrays (np.memmap or plain), read-only and never copied whole.

    Positions are global: `offsets[k]` is where array k starts, and a position's array is found by binary search
    over them, so a window may run across the end of one array into the next."""

    def __init__(self, arrays: Sequence[np.ndarray], release: Callable[[np.ndarray], None] | None = None):
        """`release(array)`, when given, is called with each array a batch was read from once the batch is copied
        out: for memory-mapped shards, a way to hand the pages back (their owner's business, not this module's)."""
        self.release = release
        parts = []
        for array in arrays:
            if array.ndim != 1 or array.dtype.kind not in "iu":
                raise ValueError(f"token arrays must be 1-D integers, got {array.dtype} of shape {array.shape}")
            if len(array):  # an empty array would share its offset with the next and confuse the search
                part = np.asarray(array).view()  # a plain ndarray (not np.memmap's subclass) over the same memory
                part.flags.writeable = False
                parts.append(part)
        self.arrays: list[np.ndarray] = parts
        self.dtype = np.result_type(*parts) if parts else np.dtype(np.int64)
        if self.dtype.kind not in "iu":  # e.g. uint64 next to int64 promotes to float64
            dtypes = sorted({str(p.dtype) for p in parts})
            raise ValueError(f"token arrays of dtypes {dtypes} have no common integer type")
        self.offsets = np.cumsum([0] + [len(p) for p in parts], dtype=np.int64)  # (K+1,): starts, then the end

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __repr__(self) -> str:
        return f"TokenSequence({len(self)} tokens in {len(self.arrays)} arrays, {self.dtype})"

    def _check(self, start: int, stop: int) -> None:
        if not 0 <= start <= stop <= len(self):
            raise IndexError(f"range [{start}, {stop}) is outside a sequence of {len(self)} tokens")

    def _pieces(self, start: int, stop: int):
        """(array index, local start, local stop) of each array the range [start, stop) touches, in order."""
        k = int(np.searchsorted(self.offsets, start, side="right")) - 1
        while start < stop:
            end = min(stop, int(self.offsets[k + 1]))
            yield k, start - int(self.offsets[k]), end - int(self.offsets[k])
            start, k = end, k + 1

    def view(self, start: int, stop: int) -> TokenSequence:
        """Tokens [start, stop), sharing the arrays' memory."""
        self._check(start, stop)
        return TokenSequence([self.arrays[k][a:b] for k, a, b in self._pieces(start, stop)], self.release)

    def window(self, start: int, length: int) -> np.ndarray:
        """Tokens [start, start + length): a read-only view when they lie in one array, else a copy."""
        self._check(start, start + length)
        pieces = [self.arrays[k][a:b] for k, a, b in self._pieces(start, start + length)]
        if len(pieces) == 1 and pieces[0].dtype == self.dtype:
            return pieces[0]
        out = np.empty(length, dtype=self.dtype)
        at = 0
        for piece in pieces:
            out[at:at + len(piece)] = piece
            at += len(piece)
        return out

    def gather(self, starts: torch.Tensor, length: int) -> torch.Tensor:
        """The windows of `length` tokens at each of `starts` (B,), as int64. -> (B, length)"""
        out = np.empty((len(starts), length), dtype=np.int64)
        for row, start in enumerate(starts.tolist()):
            out[row] = self.window(start, length)
        if self.release is not None:
            touched = {k for start in starts.tolist() for k, _, _ in self._pieces(start, start + length)}
            for k in touched:
                self.release(self.arrays[k])
        return torch.from_numpy(out)

    def tensor(self) -> torch.Tensor:
        """Every token as an int64 tensor: a copy of the whole sequence, for small ones only."""
        out = np.empty(len(self), dtype=np.int64)
        for array, at in zip(self.arrays, self.offsets.tolist()):
            out[at:at + len(array)] = array
        return torch.from_numpy(out)


Tokens = torch.Tensor | TokenSequence  # a corpus: token ids in a tensor or in (memory-mapped) arrays


def split_tokens(ids: Tokens, val_fraction: float) -> tuple[Tokens, Tokens]:
    """The first (1 - val_fraction) of the tokens train, the rest validate; no copy of either."""
    if not 0.0 < val_fraction < 1.0:
        raise ConfigError("val_fraction", f"must be in (0, 1), got {val_fraction}")
    n = int(len(ids) * (1.0 - val_fraction))
    if isinstance(ids, TokenSequence):
        return ids.view(0, n), ids.view(n, len(ids))
    return ids[:n], ids[n:]


def prepare_corpus(text: str, tokenizer: Tokenizer, val_fraction: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokenize and split (split_tokens). -> (N,), (M,)."""
    if not 0.0 < val_fraction < 1.0:  # before the tokenizing, which may take a while
        raise ConfigError("val_fraction", f"must be in (0, 1), got {val_fraction}")
    return split_tokens(torch.tensor(tokenizer.encode(text), dtype=torch.long), val_fraction)


def check_split(ids: Tokens, context_length: int, name: str) -> None:
    if isinstance(ids, torch.Tensor) and ids.dim() != 1:
        raise ValueError(f"{name} ids must be one-dimensional, got shape {tuple(ids.shape)}")
    if len(ids) < 2:
        raise ConfigError("dataset", f"the {name} split holds {len(ids)} tokens; at least 2 are needed")


def _windows(ids: Tokens, starts: torch.Tensor, length: int) -> torch.Tensor:
    """The windows of `length` tokens at `starts` (B,), as int64 (B, length), whichever kind of corpus."""
    if isinstance(ids, TokenSequence):
        return ids.gather(starts, length)
    return ids[starts[:, None] + torch.arange(length)]


class BatchSampler:
    """Random windows of a token sequence: x (B, T) and y (B, T), y being x shifted left by one token."""

    def __init__(self, ids: Tokens, batch_size: int, context_length: int, seed: int, device="cpu"):
        # A tensor is held as int64 (indexing gives the batch directly); a TokenSequence stays where it is.
        self.ids = ids if isinstance(ids, TokenSequence) else ids.long()
        self.batch_size = batch_size
        # A corpus shorter than the context gives shorter windows rather than an error.
        self.window = min(context_length, len(ids) - 1)
        self.device = torch.device(device)
        self.generator = torch.Generator().manual_seed(seed)

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        # The same draw for either kind of corpus: a checkpoint's sampler state means the same batches on both.
        starts = torch.randint(len(self.ids) - self.window, (self.batch_size,), generator=self.generator)
        chunk = _windows(self.ids, starts, self.window + 1)  # (B, T+1)
        if self.device.type == "cuda":
            chunk = chunk.pin_memory().to(self.device, non_blocking=True)
        elif self.device.type != "cpu":
            chunk = chunk.to(self.device)
        return chunk[:, :-1], chunk[:, 1:]

    def state(self) -> torch.Tensor:
        return self.generator.get_state()

    def load_state(self, state: torch.Tensor) -> None:
        self.generator.set_state(state)


def sequential_windows(ids: Tokens, context_length: int, batch_size: int):
    """Every token of `ids` after the first is predicted exactly once. Yields x (b, T), y (b, T) with targets
    -1 (ignored) where the last window is short."""
    n = len(ids) - 1
    for start in range(0, n, context_length * batch_size):
        xs, ys = [], []
        for s in range(start, min(start + context_length * batch_size, n), context_length):
            end = min(s + context_length, n)
            if isinstance(ids, TokenSequence):
                chunk = torch.from_numpy(ids.window(s, end + 1 - s).astype(np.int64))
            else:
                chunk = ids[s:end + 1]
            x, y = chunk[:-1], chunk[1:]
            if len(x) < context_length:  # pad the last window; its padded targets are ignored
                pad = context_length - len(x)
                x = torch.cat([x, x.new_zeros(pad)])
                y = torch.cat([y, y.new_full((pad,), -1)])
            xs.append(x)
            ys.append(y)
        yield torch.stack(xs), torch.stack(ys)
