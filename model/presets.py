"""Named sets of hyperparameters, each with what it is for. A request names one (`preset`) and overrides any value.

`cpu-baby`, the default everywhere, trains 2000 steps in about a minute on two CPU cores and reaches a validation
loss near 1.7 on tinyshakespeare (docs/benchmarks.md); `small` is for a GPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Preset:
    about: str  # what it is for, in a line
    values: dict[str, Any]


PRESETS: dict[str, Preset] = {
    "tiny": Preset(
        "tests and smoke runs: 50 steps of a 2-block, 32-wide model in about a second",
        dict(batch_size=4, context_length=16, d_model=32, num_heads=2, num_blocks=2, learning_rate=3e-3,
             dropout=0.0, max_iters=50, warmup=5, eval_every=25, eval_iters=2, checkpoint_every=25,
             log_every=1, compile="never"),
    ),
    "cpu-baby": Preset(
        # The nanoGPT "baby GPT on a CPU" shape. ReLU^2, a longer warm-up, a linear decay and beta1 0.8 learn the most
        # in its 2000 steps at no extra time; a feed-forward as wide as the model (mlp_ratio 1) keeps a busy 2-core
        # machine within 70 s. mlp_ratio=4 with qk_norm=true reaches a lower loss in about 40% more time.
        "a CPU: 2000 steps of a 4-block, 128-wide model in about a minute on two cores (the default)",
        dict(batch_size=12, context_length=64, d_model=128, num_blocks=4, num_heads=4, learning_rate=1e-3,
             dropout=0.0, max_iters=2000, activation="relu2", mlp_ratio=1, warmup=300, schedule="linear",
             beta1=0.8),
    ),
    "classic": Preset(
        "the first service's documented defaults: 5000 steps of an 8-block, 64-wide model (minutes on a CPU)",
        dict(batch_size=4, context_length=16, d_model=64, num_blocks=8, num_heads=4, learning_rate=1e-3,
             dropout=0.1, max_iters=5000),
    ),
    "small": Preset(
        "a GPU: nanoGPT's Shakespeare character model, 5000 steps of a 6-block, 384-wide model (hours on a CPU)",
        dict(batch_size=64, context_length=256, d_model=384, num_blocks=6, num_heads=6, learning_rate=1e-3,
             dropout=0.2, max_iters=5000, eval_every=250, eval_iters=200),
    ),
}
DEFAULT_PRESET = "cpu-baby"
