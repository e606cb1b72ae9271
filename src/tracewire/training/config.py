"""``TrainConfig``: every knob of a transcoder training run, and the named recipes.

The config is written into every checkpoint and into ``training.json``, so a run can be resumed
or reproduced from its output directory alone; ``--resume`` refuses a config that changes what
the checkpoint's parameters mean (kind, sizes, activation).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from tracewire.errors import InvalidArgumentError

KINDS = ("plt", "skip-plt", "clt")
ACTIVATIONS = ("jumprelu", "relu", "topk", "batchtopk")
# Fields whose change would make a checkpoint's tensors mean something else.
STRUCTURAL_FIELDS = ("kind", "activation", "features", "k", "input_site", "output_site", "skip", "seq_len")
# The only fields ``--resume`` may change: they say how often to write or log, not what is trained.
# Every other field (batch, token budget, lr, schedule, seed, ...) changes which data a step sees or
# what it does with it, so a resumed run would silently differ from the run its checkpoint started.
RESUME_MUTABLE_FIELDS = ("checkpoint_every", "log_every")


@dataclass(frozen=True)
class TrainConfig:
    """How to train a transcoder set.

    Sizes: ``features`` per source layer; ``batch_windows`` sequences of ``seq_len`` tokens per
    optimiser step (BOS positions excluded, so a step sees ``batch_windows * (seq_len - 1)`` tokens);
    ``tokens`` is the training budget. Losses (in standardised units, averaged over layers):
    normalised MSE + ``sparsity_coef(t)``·Σ tanh(``tanh_scale``·‖W_dec‖·a) (ramped linearly from 0
    over ``sparsity_warmup`` of the run; not for topk/batchtopk) + ``preact_coef``·Σ relu(θ − h)·‖W_dec‖.
    A skip path starts from the least-squares fit on the ``stats_batches`` (``skip_init="lstsq"``).

    ``encoder_init="data"`` starts each encoder row at a (normalised) input of a random training
    token, so every feature fires on real data from step one instead of on a random direction.
    ``auxk`` > 0 turns on the AuxK loss (Gao et al. 2024) for TopK / BatchTopK: the ``auxk`` largest
    pre-activations among the dead features (not fired in ``dead_tokens``) reconstruct what the live
    ones missed, weighted by ``auxk_coef``, which gives dead features a gradient back to life.
    """

    kind: str = "skip-plt"
    activation: str = "relu"
    features: int = 1024
    k: int | None = None
    tokens: int = 1_000_000
    seq_len: int = 128
    batch_windows: int = 32
    lr: float = 1e-3
    warmup_frac: float = 0.02
    decay_frac: float = 0.2
    sparsity_coef: float = 2e-3
    sparsity_warmup: float = 1.0
    tanh_scale: float = 4.0
    preact_coef: float = 3e-6
    threshold_init: float = 0.1
    encoder_init: str = "random"
    auxk: int = 0
    auxk_coef: float = 1 / 32
    bandwidth: float = 0.1
    grad_clip: float = 1.0
    autocast: bool = False
    model_autocast: bool = False
    input_site: str = "mlp_in"
    output_site: str = "mlp_out"
    skip: bool | None = None
    skip_init: str = "lstsq"
    stats_batches: int = 4
    eval_windows: int = 32
    checkpoint_every: int = 100
    log_every: int = 10
    dead_tokens: int = 100_000
    ema_decay: float = 0.99
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise InvalidArgumentError(f"kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if self.activation not in ACTIVATIONS:
            raise InvalidArgumentError(
                f"activation must be one of {', '.join(ACTIVATIONS)}, got {self.activation!r}"
            )
        if self.activation in ("topk", "batchtopk") and (self.k is None or not 0 < self.k <= self.features):
            raise InvalidArgumentError(
                f"activation {self.activation!r} needs k in [1, features={self.features}], got k={self.k!r}"
            )
        for name in ("features", "tokens", "batch_windows", "checkpoint_every", "log_every", "stats_batches"):
            if getattr(self, name) <= 0:
                raise InvalidArgumentError(f"{name} must be positive, got {getattr(self, name)!r}")
        if self.encoder_init not in ("random", "data"):
            raise InvalidArgumentError(f"encoder_init must be 'random' or 'data', got {self.encoder_init!r}")
        if self.auxk < 0 or (
            self.auxk and (self.activation not in ("topk", "batchtopk") or self.kind == "clt")
        ):
            raise InvalidArgumentError(
                "auxk must be >= 0 and is for per-layer topk / batchtopk transcoders only, "
                f"got auxk={self.auxk} "
                f"with kind {self.kind!r}, activation {self.activation!r}"
            )
        if self.skip_init not in ("lstsq", "zero"):
            raise InvalidArgumentError(f"skip_init must be 'lstsq' or 'zero', got {self.skip_init!r}")
        if self.seq_len < 2:
            raise InvalidArgumentError(f"seq_len must be >= 2 (BOS + one token), got {self.seq_len}")

    @property
    def has_skip(self) -> bool:
        """Skip path: always for ``skip-plt``; for ``clt`` only when ``skip`` is set."""
        return self.kind == "skip-plt" or bool(self.skip)

    @property
    def set_kind(self) -> str:
        """The ``TranscoderConfig.kind`` of the exported set (``plt`` | ``clt``)."""
        return "clt" if self.kind == "clt" else "plt"

    @property
    def dead_window_steps(self) -> int:
        """A feature is dead when it has not fired in this many steps (``dead_tokens`` worth)."""
        return max(1, -(-self.dead_tokens // self.tokens_per_step))

    @property
    def tokens_per_step(self) -> int:
        return self.batch_windows * (self.seq_len - 1)

    @property
    def total_steps(self) -> int:
        return max(1, -(-self.tokens // self.tokens_per_step))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)


def fast_default_config() -> TrainConfig:
    """The recipe ``tracewire demo`` trains on SmolLM2-135M in <= 15 minutes on 2 CPU cores.

    Skip transcoders (the linear skip absorbs the linear part of each MLP, so few features and few
    tokens already give a usable reconstruction), TopK for a fixed, known L0, 512 features per layer,
    64-token windows, bf16 autocast for the transcoder step (measured 1.3-1.5x faster on this CPU's AMX;
    the model forward stays fp32, since bf16 moves its activations by ~4%). The token budget is what a
    quiet 2-core machine reaches in ~12 minutes; ``train_fast_default`` caps the wall time so slower
    or shared machines stop on time (schedules then follow the clock). See ``benchmarks/training.py``.
    """
    return TrainConfig(
        kind="skip-plt",
        activation="topk",
        features=512,
        k=16,
        tokens=400_000,
        seq_len=64,
        batch_windows=16,
        lr=3e-3,
        autocast=True,
        checkpoint_every=25,
        log_every=5,
        stats_batches=4,
        eval_windows=16,
    )


def quality_config() -> TrainConfig:
    """The recipe of the shipped SmolLM2-135M set (``transcoders/smollm2-135m``; see its model card).

    Skip transcoders (the least-squares skip takes the linear part of each MLP), BatchTopK with
    k = 56 exported as JumpReLU (L0 stays under 64 on held-out text), 1,024 features per layer so
    the set fits the 128 MiB shipping budget in fp16, encoders initialised from data and AuxK
    against dead features. bf16 for the model forward that feeds training (its ~1% activation
    error is far below the reconstruction error) and for the transcoder step: on 2 CPU cores that
    takes the run from ~270 to ~300 tokens/s. 168 windows (21k tokens) are held out for evaluation.
    """
    return TrainConfig(
        kind="skip-plt",
        activation="batchtopk",
        features=1024,
        k=56,
        tokens=2_000_000,
        seq_len=128,
        batch_windows=16,
        lr=2e-3,
        warmup_frac=0.02,
        decay_frac=0.3,
        autocast=True,
        model_autocast=True,
        encoder_init="data",
        auxk=256,
        checkpoint_every=50,
        log_every=5,
        stats_batches=4,
        eval_windows=168,
    )
