"""AutoBot's settings and the choices of ``compress``, without torch, so that the CLI and
``CompressConfig`` take their defaults from this one place."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GateConfig:
    """AutoBot's settings; defaults from the paper (CIFAR-10)."""

    beta: float = 6.0
    gamma: float = 0.4
    lr: float = 0.6
    batch_size: int = 64
    iterations: int = 200
    init: float = 0.9
    keep_best_after: float = 0.6
    seed: int = 0


# how channels are scored; "auto" resolves to refit where the least-squares refit follows
# and to autobot otherwise (the choice of the Fashion-MNIST validation search, README)
METHODS = ("auto", "autobot", "refit", "l1", "bn-scale", "random")
CALIBRATION_SAMPLES = 512  # samples of --data for the recalibration after selection
REFIT_WEIGHTINGS = ("relative", "fisher", "auto")  # refit costs (default first; gates/refit_fisher)
REFIT_ROUNDS = 3  # --refit-rounds: 3 won 8 of 12 Fashion-MNIST validation cells against 1 round,
# mean +0.11, but lost 1.40 on ResNet-56 at 0.25 (benchmarks/yardstick_val_rounds.json); 10 won
# 11 of 24 against 3, mean -0.32 (yardstick_val_rounds_auto.json); "auto": gates/refit_choice
RECALIBRATION_MODES = ("reconstruct", "stats")  # least squares (default); mean/std matching
HOLDOUT = 0.1  # without --eval-data: the seeded part of --data held out for the figures
MIN_EVAL_SAMPLES = 200  # fewer evaluation samples: figures flagged, thresholds fail closed


@dataclass(frozen=True)
class FinetuneConfig:
    """Fine-tuning of a pruned graph: knowledge distillation from the original (+ CE)."""

    epochs: int = 1
    iterations: int | None = None  # instead of epochs: this many optimizer steps
    batch_size: int = 64  # the global batch (split over torchrun's processes)
    lr: float = 0.01
    optimizer: str = "sgd"  # sgd (momentum) | adamw
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup: float = 0.05  # share of the steps with a linear warm-up
    temperature: float = 4.0
    alpha: float = 0.9  # weight of the distillation term when labels exist
    augment: bool = False  # random flip and crop (image folders by default)
    seed: int = 0
    checkpoint_every: int = 50


OPTIMIZERS = ("sgd", "adamw")
