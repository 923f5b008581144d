"""Hyperparameters: the network's shape (ModelConfig), the training run (TrainConfig), named presets.

Both dataclasses validate themselves on construction, so an invalid value can never reach the network or the
trainer. Every error is a ConfigError whose `.field` is machine-readable: the service turns it into a failed job
or an HTTP 422 that names the field.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Iterator

POSITIONS = ("rotary", "learned", "sinusoidal")
ACTIVATIONS = ("gelu", "relu2")
OPTIMIZERS = ("adamw", "muon")
SCHEDULES = ("cosine", "linear")
COMPILE_MODES = ("auto", "always", "never")
PRECISIONS = ("auto", "fp32", "bf16")

# The classic upper-case names that the first version of the service documented.
ALIASES = {
    "BATCH_SIZE": "batch_size",
    "CONTEXT_LENGTH": "context_length",
    "D_MODEL": "d_model",
    "NUM_HEADS": "num_heads",
    "NUM_BLOCKS": "num_blocks",
    "LEARNING_RATE": "learning_rate",
    "DROPOUT": "dropout",
    "MAX_ITERS": "max_iters",
    "PRESET": "preset",
}


class ConfigError(ValueError):
    """An invalid hyperparameter. `field` names it as the user wrote it (e.g. `LEARNING_RATE` or `d_model`)."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def _check_types(obj: Any) -> None:
    """Each field must hold its declared type; an integral float is accepted where an int is expected."""
    for f in fields(obj):
        value = getattr(obj, f.name)
        kind = f.type if isinstance(f.type, str) else f.type.__name__
        optional = "None" in kind
        if value is None:
            if not optional:
                raise ConfigError(f.name, "must be given")
            continue
        if kind.startswith("int"):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
                raise ConfigError(f.name, f"must be an integer, got {value!r}")
            object.__setattr__(obj, f.name, int(value))
        elif kind.startswith("float"):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f.name, f"must be a number, got {value!r}")
            if not math.isfinite(value):
                raise ConfigError(f.name, f"must be finite, got {value!r}")
            object.__setattr__(obj, f.name, float(value))
        elif kind.startswith("bool") and not isinstance(value, bool):
            raise ConfigError(f.name, f"must be true or false, got {value!r}")
        elif kind.startswith("str") and not isinstance(value, str):
            raise ConfigError(f.name, f"must be a string, got {value!r}")


def _positive(obj: Any, *names: str) -> None:
    for name in names:
        if getattr(obj, name) <= 0:
            raise ConfigError(name, f"must be positive, got {getattr(obj, name)}")


def _one_of(obj: Any, name: str, choices: tuple[str, ...]) -> None:
    if getattr(obj, name) not in choices:
        raise ConfigError(name, f"must be one of {', '.join(choices)}; got {getattr(obj, name)!r}")


@dataclass(frozen=True)
class ModelConfig:
    """The shape of the network. `vocab_size` is None until a tokenizer has been trained."""

    vocab_size: int | None = None
    context_length: int = 64
    d_model: int = 128
    num_heads: int = 4
    num_blocks: int = 4
    dropout: float = 0.0
    positions: str = "rotary"
    activation: str = "gelu"  # "relu2" is ReLU squared
    mlp_ratio: int = 4
    qk_norm: bool = False  # normalise queries and keys per head before attention
    qk_gain: float = 1.0  # multiplies the attention logits (q.k / sqrt(head_size)); with qk_norm they are bounded
    tie_embeddings: bool = True  # output head shares the token embedding matrix
    bias: bool = False
    rope_base: float = 10000.0

    def __post_init__(self) -> None:
        _check_types(self)
        _positive(self, "context_length", "d_model", "num_heads", "num_blocks", "mlp_ratio", "rope_base", "qk_gain")
        if self.vocab_size is not None and self.vocab_size <= 0:
            raise ConfigError("vocab_size", f"must be positive, got {self.vocab_size}")
        if self.d_model % self.num_heads:
            raise ConfigError("d_model", f"{self.d_model} is not divisible by num_heads={self.num_heads}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError("dropout", f"must be in [0, 1), got {self.dropout}")
        _one_of(self, "positions", POSITIONS)
        _one_of(self, "activation", ACTIVATIONS)
        if self.positions == "rotary" and (self.d_model // self.num_heads) % 2:
            raise ConfigError("d_model", "rotary positions need an even head size (d_model / num_heads)")

    @property
    def head_size(self) -> int:
        return self.d_model // self.num_heads

    def with_vocab(self, vocab_size: int) -> ModelConfig:
        return replace(self, vocab_size=vocab_size)


@dataclass(frozen=True)
class TrainConfig:
    """One training run: optimisation, schedule, validation and checkpoint cadence."""

    batch_size: int = 12
    learning_rate: float = 1e-3  # AdamW's peak rate (all parameters, or embeddings/norms when optimizer="muon")
    max_iters: int = 2000
    warmup: int = 100  # linear warm-up steps, then decay to min_lr_ratio * learning_rate at max_iters
    schedule: str = "cosine"
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.1  # matrices only; embeddings, norms and biases are never decayed
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0  # max global gradient norm; 0 turns clipping off
    grad_accum: int = 1
    optimizer: str = "adamw"
    muon_lr: float = 0.02  # peak rate of the orthogonalised updates of the hidden matrices (optimizer="muon")
    muon_momentum: float = 0.95
    muon_steps: int = 5  # Newton-Schulz iterations per update: fewer are cheaper and rougher
    eval_every: int = 250
    eval_iters: int = 20
    early_stopping_patience: int = 0  # stop after this many validations without improvement; 0 turns it off
    seed: int = 1337
    val_fraction: float = 0.1
    checkpoint_every: int = 500  # also at the end, on early stop and on cancel
    log_every: int = 10
    compile: str = "auto"  # torch.compile: "auto" compiles on CUDA only (on a small CPU it costs more than it saves)
    precision: str = "auto"  # "auto": bf16 autocast on CUDA; on a CPU with bf16 support, bf16 matrix products

    def __post_init__(self) -> None:
        _check_types(self)
        _positive(self, "batch_size", "learning_rate", "max_iters", "grad_accum", "eval_every", "eval_iters",
                  "checkpoint_every", "log_every", "muon_lr", "muon_steps")
        for name in ("warmup", "weight_decay", "grad_clip", "early_stopping_patience"):
            if getattr(self, name) < 0:
                raise ConfigError(name, f"must not be negative, got {getattr(self, name)}")
        for name in ("beta1", "beta2", "muon_momentum", "min_lr_ratio"):
            if not 0.0 <= getattr(self, name) < 1.0 + (name == "min_lr_ratio"):
                raise ConfigError(name, f"out of range: {getattr(self, name)}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError("val_fraction", f"must be in (0, 1), got {self.val_fraction}")
        _one_of(self, "optimizer", OPTIMIZERS)
        _one_of(self, "schedule", SCHEDULES)
        _one_of(self, "compile", COMPILE_MODES)
        _one_of(self, "precision", PRECISIONS)


PRESETS: dict[str, dict[str, Any]] = {
    # For tests: trains 50 iterations in about a second on one CPU core.
    "tiny": dict(batch_size=4, context_length=16, d_model=32, num_heads=2, num_blocks=2, learning_rate=3e-3,
                 dropout=0.0, max_iters=50, warmup=5, eval_every=25, eval_iters=2, checkpoint_every=25,
                 log_every=1, compile="never"),
    # The documented defaults of the first service.
    "classic": dict(batch_size=4, context_length=16, d_model=64, num_blocks=8, num_heads=4, learning_rate=1e-3,
                    dropout=0.1, max_iters=5000),
    # The nanoGPT "baby GPT on a CPU" shape. ReLU^2, a longer warm-up, a linear decay and beta1 0.8 learn the most in
    # its 2000 steps at no extra time; a feed-forward as wide as the model (mlp_ratio 1) trains 2000 steps in about
    # 45 s on the project's 2-core VM, so that a busy host still finishes within 70 s. mlp_ratio=4 with qk_norm=true
    # reaches a lower loss in about 40% more time (docs/benchmarks.md, "Model").
    "cpu-baby": dict(batch_size=12, context_length=64, d_model=128, num_blocks=4, num_heads=4, learning_rate=1e-3,
                     dropout=0.0, max_iters=2000, activation="relu2", mlp_ratio=1, warmup=300,
                     schedule="linear", beta1=0.8),
    # For a GPU: nanoGPT's Shakespeare character model.
    "small": dict(batch_size=64, context_length=256, d_model=384, num_blocks=6, num_heads=6, learning_rate=1e-3,
                  dropout=0.2, max_iters=5000, eval_every=250, eval_iters=200),
}
DEFAULT_PRESET = "classic"

_MODEL_FIELDS = {f.name for f in fields(ModelConfig)} - {"vocab_size"}
_TRAIN_FIELDS = {f.name for f in fields(TrainConfig)}


@dataclass(frozen=True)
class Hyperparameters:
    """The resolved, validated configuration. Unpacks as `model_config, train_config = resolve_hyperparameters(hp)`."""

    preset: str
    model: ModelConfig
    train: TrainConfig

    def __iter__(self) -> Iterator[Any]:
        return iter((self.model, self.train))

    def to_dict(self) -> dict[str, Any]:
        """Every resolved value in one flat dict, for display and for echoing back to the user."""
        out: dict[str, Any] = {"preset": self.preset}
        out.update({k: v for k, v in asdict(self.model).items() if k != "vocab_size"})
        out.update(asdict(self.train))
        return out


def resolve_hyperparameters(hp: dict[str, Any] | None = None) -> Hyperparameters:
    """Preset + overrides (own names or classic upper-case names) -> validated configs. Raises ConfigError."""
    hp = dict(hp or {})
    spelled: dict[str, str] = {}  # canonical name -> the key the user wrote, to name it back in errors
    values: dict[str, Any] = {}
    for key, value in hp.items():
        if not isinstance(key, str):
            raise ConfigError(str(key), "hyperparameter names must be strings")
        name = ALIASES.get(key, key)
        if name != "preset" and name not in _MODEL_FIELDS | _TRAIN_FIELDS:
            raise ConfigError(key, "unknown hyperparameter")
        if name in values and values[name] != value:
            raise ConfigError(key, f"given twice with different values (also as {spelled[name]})")
        spelled[name] = key
        if value is not None:
            values[name] = value
    preset = values.pop("preset", DEFAULT_PRESET)
    if not isinstance(preset, str) or preset not in PRESETS:
        raise ConfigError(spelled.get("preset", "preset"), f"unknown preset {preset!r}; known: {', '.join(PRESETS)}")
    merged = {**PRESETS[preset], **values}
    try:
        model = ModelConfig(**{k: v for k, v in merged.items() if k in _MODEL_FIELDS})
        train = TrainConfig(**{k: v for k, v in merged.items() if k in _TRAIN_FIELDS})
    except ConfigError as e:
        raise ConfigError(spelled.get(e.field, e.field), e.message) from None
    return Hyperparameters(preset, model, train)


def model_config_from_dict(d: dict[str, Any]) -> ModelConfig:
    """Rebuild a ModelConfig saved with asdict(); keys from a newer version are ignored."""
    known = {f.name for f in fields(ModelConfig)}
    return ModelConfig(**{k: v for k, v in d.items() if k in known})


def train_config_from_dict(d: dict[str, Any]) -> TrainConfig:
    return TrainConfig(**{k: v for k, v in d.items() if k in _TRAIN_FIELDS})

