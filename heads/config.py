"""Typed configuration of a head-training run (resolved and saved as ``config.json``).

Every check in ``__post_init__`` names the CLI flag to change, so a bad value fails before
any data is read.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from featurestore.errors import InputError

__all__ = ["HeadConfig", "FUSIONS", "HEADS", "MONITORS", "PRELOAD_MODES", "DEFAULT_MODALITY_DROPOUT",
           "PRESENCE_KEYS"]

FUSIONS = ("concat", "attention")
#: ``mlp``: projectors + fusion + classifier (Lightning); ``linear``: multinomial logistic
#: regression on the standardised inputs (full-batch L-BFGS), a strong small-data baseline.
HEADS = ("mlp", "linear")
#: Validation figures early stopping / checkpointing may follow (all: higher is better).
MONITORS = ("weighted_f1", "macro_f1", "uar", "accuracy")
PRELOAD_MODES = ("auto", "always", "never")
#: ``--modality-dropout`` of a run over more than one feature set when the flag is not given.
DEFAULT_MODALITY_DROPOUT = 0.3
#: Keys of runs trained with presence masks; a ``config.json`` without them is an older run,
#: loaded with ``require_all=True`` (it predicts, and refuses clips, exactly as before).
PRESENCE_KEYS = ("require_all", "modality_dropout")


@dataclass
class HeadConfig:
    """Everything that defines a projector + fusion + classifier run.

    Attributes:
        encoders: feature sets to fuse (``--encoders hubert,mae``), in projector order.
        label: clip column holding the class (``--label``).
        where: SQL filter on clip columns choosing the clips (``--where``).
        split_by: group column for a group split (``--split-by speaker``); None uses the
            ``split`` column when it has values, else a stratified random split.
        folds: group k-fold with this many folds (``--folds``; needs ``--split-by``);
            ``"loo"`` is one fold per group (leave one group out); 0 is a single group split.
        fold: which fold is the test fold (``--fold``); validation is a held-out group of
            the training folds. None (no ``--fold``): ``emofs train head`` trains every
            fold (:func:`heads.cv.cross_validate`); a single run takes fold 0.
        val_frac: validation share of a random or group split (``--val-frac``).
        test_frac: test share of a random or group split (``--test-frac``).
        fusion: ``concat`` or ``attention`` (softmax weights over modalities).
        hidden: projector width (``--hidden``; Emotion-LLaMA projects to 4096).
        dropout: dropout on projected features (``--dropout``).
        epochs: maximum epochs (``--epochs``); None: derived from the training-set size
            (at least ``heads.schedule.MIN_STEPS`` steps).
        max_steps: stop after this many optimiser steps (-1: no limit; smoke tests).
        lr: AdamW learning rate (``--lr``). weight_decay: AdamW weight decay.
        batch_size: clips per step (``--batch-size``); None: ``clamp(n_train / 8, 16, 256)``.
        seed: seed of splits, weights and shuffling (``--seed``).
        patience: validation checks (epochs) without improvement before early stopping
            (``--patience``); None: about ``heads.schedule.PATIENCE_STEPS`` steps, at least 5.
        monitor: validation figure for early stopping and the best checkpoint.
        standardize: z-score each input dimension with train-set statistics, kept in the
            checkpoint (``--no-standardize``); needed for raw features like eGeMAPS.
        class_weights: inverse-frequency class weights in the loss (``--no-class-weights``).
        drop_missing: drop clips lacking the feature sets they need instead of failing
            (``--drop-missing``): by default a clip needs at least one of ``encoders``; with
            ``require_all``, every one.
        require_all: the strict behaviour of runs before missing-modality fusion: a clip
            must have every feature set, at training and at prediction (``--require-all``).
        modality_dropout: chance of hiding each present modality of a training clip (at
            least one stays), so the head learns to answer from any subset
            (``--modality-dropout``); None: 0.3 with more than one feature set, else 0.
        preload: ``auto`` (preload when it fits in memory), ``always`` or ``never`` (stream
            from Lance with the torch reader) (``--preload``).
        workers: DataLoader worker processes when streaming (``--workers``; spawn).
        accelerator: Lightning accelerator (``cpu``, ``gpu``, ``auto``).
        threads: torch CPU threads (``--threads``; 0 keeps torch's default). On a shared
            or small CPU, 1 thread is often faster than several fighting for cores.
        head: ``mlp`` (projectors + fusion) or ``linear`` (logistic regression) (``--head``).
        normalize: group column whose groups are z-scored with their own mean / std before
            the global standardisation (``--normalize speaker``; None or ``none``: off).
    """

    encoders: list[str]
    label: str = "label"
    where: str | None = None
    split_by: str | None = None
    folds: int | str = 0
    fold: int | None = None
    val_frac: float = 0.15
    test_frac: float = 0.2
    fusion: str = "concat"
    hidden: int = 512
    dropout: float = 0.5
    epochs: int | None = None
    max_steps: int = -1
    lr: float = 1e-3
    weight_decay: float = 1e-2
    batch_size: int | None = None
    seed: int = 0
    patience: int | None = None
    monitor: str = "weighted_f1"
    standardize: bool = True
    class_weights: bool = True
    drop_missing: bool = False
    require_all: bool = False
    modality_dropout: float | None = None
    preload: str = "auto"
    workers: int = 0
    accelerator: str = "auto"
    threads: int = 0
    normalize: str | None = None
    head: str = "mlp"

    def __post_init__(self) -> None:
        if self.normalize is not None and self.normalize.strip().lower() in ("", "none"):
            self.normalize = None
        if isinstance(self.encoders, str):
            self.encoders = [e.strip() for e in self.encoders.split(",")]
        self.encoders = [e.strip() for e in self.encoders if e and e.strip()]
        if not self.encoders:
            raise InputError("--encoders needs at least one feature set, e.g. --encoders hubert,mae")
        if len(set(self.encoders)) != len(self.encoders):
            raise InputError(f"--encoders lists a feature set twice: {','.join(self.encoders)}")
        if self.modality_dropout is None:
            self.modality_dropout = DEFAULT_MODALITY_DROPOUT if len(self.encoders) > 1 else 0.0
        if not 0.0 <= self.modality_dropout < 1.0:
            raise InputError(f"--modality-dropout must be in [0, 1) (got {self.modality_dropout})")
        if not self.label:
            raise InputError("--label must name a clip column, e.g. --label label")
        if self.fusion not in FUSIONS:
            raise InputError(f"--fusion must be one of {', '.join(FUSIONS)} (got {self.fusion!r})")
        if self.head not in HEADS:
            raise InputError(f"--head must be one of {', '.join(HEADS)} (got {self.head!r})")
        if self.monitor not in MONITORS:
            raise InputError(f"--monitor must be one of {', '.join(MONITORS)} (got {self.monitor!r})")
        if self.preload not in PRELOAD_MODES:
            raise InputError(
                f"--preload must be one of {', '.join(PRELOAD_MODES)} (got {self.preload!r})"
            )
        _positive("--hidden", self.hidden)
        for flag, value in (("--epochs", self.epochs), ("--batch-size", self.batch_size)):
            if value is not None:
                _positive(flag, value)
        if not 0.0 <= self.dropout < 1.0:
            raise InputError(f"--dropout must be in [0, 1) (got {self.dropout})")
        if not self.lr > 0:
            raise InputError(f"--lr must be > 0 (got {self.lr})")
        if self.weight_decay < 0:
            raise InputError(f"--weight-decay must be >= 0 (got {self.weight_decay})")
        if self.patience is not None and self.patience < 1:
            raise InputError(f"--patience must be >= 1 (got {self.patience})")
        if self.max_steps == 0 or self.max_steps < -1:
            raise InputError(f"--max-steps must be -1 (no limit) or >= 1 (got {self.max_steps})")
        if self.threads < 0:
            raise InputError(f"--threads must be >= 0 (0: torch's default; got {self.threads})")
        if self.workers < 0:
            raise InputError(f"--workers must be >= 0 (got {self.workers})")
        for flag, value in (("--val-frac", self.val_frac), ("--test-frac", self.test_frac)):
            if not 0.0 < value < 1.0:
                raise InputError(f"{flag} must be between 0 and 1 (got {value})")
        if self.val_frac + self.test_frac >= 0.9:
            raise InputError("--val-frac + --test-frac must leave at least 10% for training")
        if isinstance(self.folds, str):
            text = self.folds.strip().lower()
            if text != "loo" and not text.isdigit():
                raise InputError(f"--folds must be a number of folds or loo (leave one group out; got {self.folds!r})")
            self.folds = "loo" if text == "loo" else int(text)
        if self.folds:
            if self.split_by is None:
                raise InputError("--folds needs --split-by COLUMN (a group k-fold), e.g. --split-by speaker")
            if self.folds != "loo" and self.folds < 2:
                raise InputError(f"--folds must be >= 2 or loo (got {self.folds})")
            if self.fold is not None and (self.fold < 0 or (self.folds != "loo" and self.fold >= self.folds)):
                raise InputError(f"--fold must be in 0..{self.n_folds_hint()} (got {self.fold})")
        elif self.fold:
            raise InputError("--fold needs --folds K")

    def n_folds_hint(self) -> str:
        """The largest valid ``--fold`` as text (``groups - 1`` for ``loo``)."""
        return "groups - 1" if self.folds == "loo" else str(int(self.folds) - 1)

    # ----------------------------------------------------------------- io
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict of every field."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "HeadConfig":
        """Build from a dict (unknown keys are refused, naming them)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise InputError(f"unknown config keys {', '.join(unknown)} (known: {', '.join(sorted(names))})")
        return cls(**data)

    def save(self, path: str | Path) -> None:
        """Write ``config.json``."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "HeadConfig":
        """Read a ``config.json`` written by :meth:`save`.

        A file without the presence keys (:data:`PRESENCE_KEYS`) is a run trained before
        missing-modality fusion: it loads with ``require_all=True`` and no modality dropout,
        so it needs every feature set per clip, as it always did.
        """
        data = json.loads(Path(path).read_text())
        if isinstance(data, dict) and not any(k in data for k in PRESENCE_KEYS):
            data = {**data, "require_all": True, "modality_dropout": 0.0}
        return cls.from_dict(data)

    def replace(self, **changes: Any) -> "HeadConfig":
        """A copy with some fields changed (re-checked)."""
        return dataclasses.replace(self, **changes)


def _positive(flag: str, value: int) -> None:
    if not isinstance(value, int) or value < 1:
        raise InputError(f"{flag} must be a positive integer (got {value!r})")
