"""Hyperparameters: the network's shape (ModelConfig), the training run (TrainConfig), named presets.

Each field says what it does, its default and its bounds in one place (`hp(...)`), which the service's help, the
CLI, the REST API's `/presets` and the dashboard's form all read (`describe_hyperparameters`). Both dataclasses
validate themselves on construction, so an invalid value can never reach the network or the trainer. Every error is
a ConfigError whose `.field` is machine-readable: the service turns it into a failed job or an HTTP 422 that names
the field, and an unknown name gets the nearest known one as a suggestion.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Iterator

from model.presets import DEFAULT_PRESET, PRESETS

POSITIONS = ("rotary", "learned", "sinusoidal")
ACTIVATIONS = ("gelu", "relu2", "gelu_tanh")
OPTIMIZERS = ("adamw", "muon")
SCHEDULES = ("cosine", "linear")
COMPILE_MODES = ("auto", "always", "never")
PRECISIONS = ("auto", "fp32", "bf16")

# Other spellings of our names: the classic upper-case ones the first service documented, and nanoGPT's where they
# mean exactly the same thing.
ALIASES = {
    "BATCH_SIZE": "batch_size", "CONTEXT_LENGTH": "context_length", "D_MODEL": "d_model", "NUM_HEADS": "num_heads",
    "NUM_BLOCKS": "num_blocks", "LEARNING_RATE": "learning_rate", "DROPOUT": "dropout", "MAX_ITERS": "max_iters",
    "PRESET": "preset",
    "n_layer": "num_blocks", "n_head": "num_heads", "n_embd": "d_model", "block_size": "context_length",
    "warmup_iters": "warmup", "eval_interval": "eval_every", "log_interval": "log_every",
    "gradient_accumulation_steps": "grad_accum",
}


class ConfigError(ValueError):
    """An invalid hyperparameter. `field` names it as the user wrote it (e.g. `LEARNING_RATE` or `d_model`)."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class Bounds:
    low: float | None = None
    high: float | None = None
    low_open: bool = False  # low < value, rather than low <= value
    high_open: bool = False

    def check(self, name: str, value: float) -> None:
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            if self.low == 0 and self.low_open or self.low == 1 and isinstance(value, int):
                raise ConfigError(name, f"must be positive, got {value}")
            if self.low == 0:
                raise ConfigError(name, f"must not be negative, got {value}")
            raise ConfigError(name, f"must be {'above' if self.low_open else 'at least'} {self.low:g}, got {value}")
        if self.high is not None and (value > self.high or (self.high_open and value == self.high)):
            raise ConfigError(name, f"must be {'below' if self.high_open else 'at most'} {self.high:g}, got {value}")

    def __str__(self) -> str:
        low = f"{self.low:g} {'<' if self.low_open else '<='} " if self.low is not None else ""
        high = f" {'<' if self.high_open else '<='} {self.high:g}" if self.high is not None else ""
        return f"{low}x{high}"


def hp(default: Any, help: str, *, low: float | None = None, high: float | None = None, low_open: bool = False,
       high_open: bool = False, choices: tuple[str, ...] | None = None) -> Any:
    """A hyperparameter: its default, what it does, and the values it may take."""
    bounds = Bounds(low, high, low_open, high_open) if low is not None or high is not None else None
    return field(default=default, metadata={"help": help, "bounds": bounds, "choices": choices})


def _check(obj: Any) -> None:
    """Each field must hold its declared type (an integral float is accepted where an int is expected) and stay
    within its bounds and choices."""
    for f in fields(obj):
        value = getattr(obj, f.name)
        kind = f.type if isinstance(f.type, str) else f.type.__name__
        if value is None:
            if "None" not in kind:
                raise ConfigError(f.name, "must be given")
            continue
        if kind.startswith("int"):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
                raise ConfigError(f.name, f"must be an integer, got {value!r}")
            value = int(value)
        elif kind.startswith("float"):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f.name, f"must be a number, got {value!r}")
            if not math.isfinite(value):
                raise ConfigError(f.name, f"must be finite, got {value!r}")
            value = float(value)
        elif kind.startswith("bool") and not isinstance(value, bool):
            raise ConfigError(f.name, f"must be true or false, got {value!r}")
        elif kind.startswith("str") and not isinstance(value, str):
            raise ConfigError(f.name, f"must be a string, got {value!r}")
        object.__setattr__(obj, f.name, value)
        if f.metadata.get("bounds") is not None:
            f.metadata["bounds"].check(f.name, value)
        choices = f.metadata.get("choices")
        if choices is not None and value not in choices:
            raise ConfigError(f.name, f"must be one of {', '.join(choices)}; got {value!r}")


@dataclass(frozen=True)
class ModelConfig:
    """The shape of the network. `vocab_size` is None until a tokenizer has been trained."""

    vocab_size: int | None = hp(None, "tokens in the vocabulary (set by the tokenizer)", low=1, high=1 << 20)
    context_length: int = hp(64, "tokens the model sees at once (nanoGPT: block_size)", low=1, high=8192)
    d_model: int = hp(128, "width of the network (nanoGPT: n_embd); a multiple of num_heads", low=1, high=8192)
    num_heads: int = hp(4, "attention heads per block (nanoGPT: n_head)", low=1, high=128)
    num_blocks: int = hp(4, "transformer blocks (nanoGPT: n_layer)", low=1, high=128)
    dropout: float = hp(0.0, "share of activations zeroed while training", low=0, high=1, high_open=True)
    positions: str = hp("rotary", "how the model knows where a token is", choices=POSITIONS)
    activation: str = hp("gelu", "the feed-forward's non-linearity (relu2 is ReLU squared; gelu_tanh is GELU's tanh "
                                  "approximation, GPT-2's and llama.cpp's)", choices=ACTIVATIONS)
    mlp_ratio: int = hp(4, "feed-forward width as a multiple of d_model", low=1, high=16)
    qk_norm: bool = hp(False, "normalise each head's queries and keys before attention")
    qk_gain: float = hp(1.0, "multiplies the attention logits (q.k / sqrt(head size))", low=0, low_open=True,
                        high=100)
    tie_embeddings: bool = hp(True, "the output head shares the token embedding matrix")
    bias: bool = hp(False, "biases in the linear layers and norms")
    rope_base: float = hp(10000.0, "base of the rotary positions' frequencies", low=0, low_open=True, high=1e9)

    def __post_init__(self) -> None:
        _check(self)
        if self.d_model % self.num_heads:
            raise ConfigError("d_model", f"{self.d_model} is not divisible by num_heads={self.num_heads}")
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

    batch_size: int = hp(12, "sequences per step", low=1, high=4096)
    learning_rate: float = hp(1e-3, "AdamW's peak rate (with muon: the embeddings' and norms')", low=0,
                              low_open=True, high=10)
    max_iters: int = hp(2000, "optimisation steps (when continuing a model: steps more)", low=1, high=1_000_000)
    warmup: int = hp(100, "steps of linear warm-up before the decay (nanoGPT: warmup_iters)", low=0, high=1_000_000)
    schedule: str = hp("cosine", "decay of the learning rate after warm-up, to min_lr_ratio of it", choices=SCHEDULES)
    min_lr_ratio: float = hp(0.1, "the learning rate at the end, as a share of the peak", low=0, high=1)
    weight_decay: float = hp(0.1, "AdamW weight decay of the matrices (never embeddings, norms, biases)", low=0,
                             high=10)
    beta1: float = hp(0.9, "AdamW's first-moment decay", low=0, high=1, high_open=True)
    beta2: float = hp(0.99, "AdamW's second-moment decay", low=0, high=1, high_open=True)
    grad_clip: float = hp(1.0, "largest global gradient norm; 0 turns clipping off", low=0, high=1e6)
    grad_accum: int = hp(1, "micro-batches per step (nanoGPT: gradient_accumulation_steps)", low=1, high=1024)
    optimizer: str = hp("adamw", "adamw, or muon for the blocks' matrices", choices=OPTIMIZERS)
    muon_lr: float = hp(0.02, "muon's peak rate", low=0, low_open=True, high=10)
    muon_momentum: float = hp(0.95, "muon's momentum", low=0, high=1, high_open=True)
    muon_steps: int = hp(5, "Newton-Schulz iterations per muon update", low=1, high=20)
    eval_every: int = hp(250, "steps between validations (nanoGPT: eval_interval)", low=1, high=1_000_000)
    eval_iters: int = hp(20, "batches per validation", low=1, high=10_000)
    early_stopping_patience: int = hp(0, "stop after this many validations without improvement; 0: never", low=0,
                                      high=10_000)
    seed: int = hp(1337, "seed of the weights, the batches and dropout", low=0, high=2**63 - 1)
    val_fraction: float = hp(0.1, "share of the text held out for validation (its end)", low=0, low_open=True,
                             high=1, high_open=True)
    checkpoint_every: int = hp(500, "steps between checkpoints (also at the end, on a new best, on cancel)", low=1,
                               high=1_000_000)
    log_every: int = hp(10, "steps between training-loss readings (nanoGPT: log_interval)", low=1, high=1_000_000)
    compile: str = hp("auto", "torch.compile: auto compiles on CUDA only", choices=COMPILE_MODES)
    precision: str = hp("auto", "auto: bf16 autocast on CUDA, bf16 products on a CPU that has them",
                        choices=PRECISIONS)
    shard_optimizer: bool = hp(False, "with several training processes, each keeps the optimiser state of its share "
                                      "of the parameters only (ZeRO-1); checkpoints hold all of it")

    def __post_init__(self) -> None:
        _check(self)


_MODEL_FIELDS = {f.name for f in fields(ModelConfig)} - {"vocab_size"}
_TRAIN_FIELDS = {f.name for f in fields(TrainConfig)}
KNOWN_NAMES = sorted(_MODEL_FIELDS | _TRAIN_FIELDS | {"preset"})


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


def unknown_name(key: str) -> ConfigError:
    """`unknown hyperparameter`, with the nearest known name (ours or an alias) when there is one."""
    close = difflib.get_close_matches(key, [*KNOWN_NAMES, *ALIASES], n=1, cutoff=0.6)
    if not close and key.lower() != key:
        close = difflib.get_close_matches(key.lower(), KNOWN_NAMES, n=1, cutoff=0.6)
    hint = f"; did you mean {ALIASES.get(close[0], close[0])}?" if close else ""
    return ConfigError(key, f"unknown hyperparameter{hint} (`lfz presets` and GET /api/v1/presets list them all)")


def resolve_hyperparameters(hp: dict[str, Any] | None = None) -> Hyperparameters:
    """Preset + overrides (our names, or the aliases) -> validated configs. Raises ConfigError."""
    hp = dict(hp or {})
    spelled: dict[str, str] = {}  # canonical name -> the key the user wrote, to name it back in errors
    values: dict[str, Any] = {}
    for key, value in hp.items():
        if not isinstance(key, str):
            raise ConfigError(str(key), "hyperparameter names must be strings")
        name = ALIASES.get(key, key)
        if name != "preset" and name not in _MODEL_FIELDS | _TRAIN_FIELDS:
            raise unknown_name(key)
        if name in values and values[name] != value:
            raise ConfigError(key, f"given twice with different values (also as {spelled[name]})")
        spelled[name] = key
        if value is not None:
            values[name] = value
    preset = values.pop("preset", DEFAULT_PRESET)
    if not isinstance(preset, str) or preset not in PRESETS:
        raise ConfigError(spelled.get("preset", "preset"), f"unknown preset {preset!r}; known: {', '.join(PRESETS)}")
    merged = {**PRESETS[preset].values, **values}
    try:
        model = ModelConfig(**{k: v for k, v in merged.items() if k in _MODEL_FIELDS})
        train = TrainConfig(**{k: v for k, v in merged.items() if k in _TRAIN_FIELDS})
    except ConfigError as e:
        raise ConfigError(spelled.get(e.field, e.field), e.message) from None
    return Hyperparameters(preset, model, train)


def describe_hyperparameters() -> list[dict[str, Any]]:
    """Every hyperparameter a request may set: name, group, type, default, meaning, bounds or choices, aliases."""
    aliases: dict[str, list[str]] = {}
    for alias, name in ALIASES.items():
        aliases.setdefault(name, []).append(alias)
    out = []
    for group, cls in (("model", ModelConfig), ("train", TrainConfig)):
        for f in fields(cls):
            if f.name == "vocab_size":
                continue
            bounds, choices = f.metadata.get("bounds"), f.metadata.get("choices")
            out.append({"name": f.name, "group": group, "type": str(f.type), "default": f.default,
                        "help": f.metadata.get("help", ""), "bounds": str(bounds) if bounds else None,
                        "choices": list(choices) if choices else None, "aliases": aliases.get(f.name, [])})
    return out


def model_config_from_dict(d: dict[str, Any]) -> ModelConfig:
    """Rebuild a ModelConfig saved with asdict(); keys from a newer version are ignored."""
    known = {f.name for f in fields(ModelConfig)}
    return ModelConfig(**{k: v for k, v in d.items() if k in known})


def train_config_from_dict(d: dict[str, Any]) -> TrainConfig:
    return TrainConfig(**{k: v for k, v in d.items() if k in _TRAIN_FIELDS})
