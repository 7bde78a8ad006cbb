"""Head commands: ``train head``, ``eval``, ``ablate``, ``predict``, ``embed``.

``train head`` and ``ablate`` take the same ~20 flags of a head run; they are listed once,
in :data:`_HEAD_FLAGS`, and :func:`_head_options` puts them in front of each command's
own parameters, handing their values to the command as ``**flags`` (the fields of
:class:`heads.HeadConfig`).
"""

from __future__ import annotations

import functools
import inspect
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer

from .common import FormatOpt, JsonOpt, StoreOpt, WhereOpt, check_format, echo_json, open_store, print_frame, sub_app

__all__ = ["train_app", "train_head_command", "eval_command", "ablate_command", "predict_command", "embed_command"]

train_app = sub_app("Train models from cached features (no encoder runs).")

_DropMissingOpt = Annotated[
    bool, typer.Option("--drop-missing", help="Drop clips lacking the feature sets they need (reported) instead "
                       "of failing: clips with none of them (every one with a --require-all run).")
]
_OutOpt = Annotated[Optional[Path], typer.Option("--out", help="Run directory. [default: runs/<time>-<encoders>]")]
_RunArg = Annotated[Path, typer.Argument(help="A run directory written by `emofs train head`.")]
_TrainerOpt = Annotated[str, typer.Option(
    "--trainer", help="auto (a plain torch loop when preloaded: starts in seconds), plain, or lightning "
    "(its loggers and callbacks).")]

_REQUIRED = inspect.Parameter.empty
#: The flags of a head run, in help order: (HeadConfig field, option, default).
_HEAD_FLAGS: tuple[tuple[str, Any, Any], ...] = (
    ("encoders", Annotated[str, typer.Option("--encoders", "-e", help="Comma-separated feature sets to fuse.")],
     _REQUIRED),
    ("label", Annotated[str, typer.Option("--label", help="Clip column holding the class.")], "label"),
    ("where", WhereOpt, None),
    ("split_by", Annotated[Optional[str], typer.Option(
        "--split-by", help="Group column for a group split, e.g. speaker (speaker-independent).")], None),
    ("folds", Annotated[str, typer.Option(
        "--folds", help="Group k-fold: K folds or loo (needs --split-by); without --fold trains every fold.")], "0"),
    ("fold", Annotated[Optional[int], typer.Option(
        "--fold", help="Train only this test fold of --folds (validation: a held-out training group).")], None),
    ("head", Annotated[str, typer.Option(
        "--head", help="mlp (projectors + fusion) or linear (logistic regression baseline).")], "mlp"),
    ("fusion", Annotated[str, typer.Option("--fusion", help="concat or attention (softmax over modalities).")],
     "concat"),
    ("hidden", Annotated[int, typer.Option("--hidden", help="Projector width (Emotion-LLaMA: 4096).")], 512),
    ("dropout", Annotated[float, typer.Option("--dropout", help="Dropout on projected features.")], 0.5),
    ("epochs", Annotated[Optional[int], typer.Option(
        "--epochs", help="Maximum epochs. [default: from the training-set size, >= 500 steps]")], None),
    ("lr", Annotated[float, typer.Option("--lr", help="AdamW learning rate.")], 1e-3),
    ("weight_decay", Annotated[float, typer.Option("--weight-decay", help="AdamW weight decay.")], 1e-2),
    ("batch_size", Annotated[Optional[int], typer.Option(
        "--batch-size", help="Clips per step. [default: n_train/8 within 16..256]")], None),
    ("seed", Annotated[int, typer.Option("--seed", help="Seed of split, weights and shuffling.")], 0),
    ("patience", Annotated[Optional[int], typer.Option(
        "--patience", help="Epochs without improvement before stopping. [default: ~250 steps, >= 5]")], None),
    ("monitor", Annotated[str, typer.Option(
        "--monitor", help="Validation figure: weighted_f1, macro_f1, uar, accuracy.")], "weighted_f1"),
    ("class_weights", Annotated[bool, typer.Option(
        "--class-weights/--no-class-weights", help="Inverse-frequency class weights in the loss.")], True),
    ("standardize", Annotated[bool, typer.Option(
        "--standardize/--no-standardize", help="Z-score inputs with train-set statistics.")], True),
    ("normalize", Annotated[Optional[str], typer.Option(
        "--normalize", help="Z-score each group of this column (e.g. speaker) with its own mean/std; none: off.")],
     None),
    ("drop_missing", _DropMissingOpt, False),
    ("require_all", Annotated[bool, typer.Option(
        "--require-all", help="Train only clips having every feature set (the old strict behaviour); "
        "default: clips having at least one.")], False),
    ("modality_dropout", Annotated[Optional[float], typer.Option(
        "--modality-dropout", help="Chance of hiding each modality of a training clip (one always stays). "
        "[default: 0.3 with several feature sets, else 0]")], None),
    ("preload", Annotated[str, typer.Option(
        "--preload", help="auto (if it fits in memory), always or never (stream).")], "auto"),
    ("workers", Annotated[int, typer.Option("--workers", help="Loader processes when streaming (spawn).")], 0),
    ("max_steps", Annotated[int, typer.Option("--max-steps", help="Stop after N steps (-1: no limit).")], -1),
    ("threads", Annotated[int, typer.Option(
        "--threads", help="Torch CPU threads (0: torch default; 1 is often faster on a busy CPU).")], 0),
)


def _head_options(*, skip: tuple[str, ...] = ()) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Give a command the head-run flags (less ``skip``) before its own parameters.

    The command declares only its own parameters plus ``**flags``; Typer sees the full
    signature and calls it with every flag by name.
    """
    shared = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=option, default=default)
              for name, option, default in _HEAD_FLAGS if name not in skip]

    def decorate(command: Callable[..., None]) -> Callable[..., None]:
        own = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
               for p in inspect.signature(command, eval_str=True).parameters.values()
               if p.kind is not inspect.Parameter.VAR_KEYWORD]

        @functools.wraps(command)
        def with_head_flags(**values: Any) -> None:
            return command(**values)

        with_head_flags.__signature__ = inspect.Signature(shared + own)  # type: ignore[attr-defined]
        return with_head_flags

    return decorate


def _head_config(flags: dict[str, Any]):
    """The :class:`heads.HeadConfig` of the shared head flags (its checks name the flag)."""
    from heads.config import HeadConfig

    return HeadConfig(**flags)


@train_app.command("head")
@_head_options()
def train_head_command(out: _OutOpt = None, store: StoreOpt = None, as_json: JsonOpt = False,
                       trainer: _TrainerOpt = "auto", **flags: Any) -> None:
    """Train projector + fusion + classifier heads on cached features (Lightning).

    The run directory gets config.json, labels.json, features.json, splits.csv,
    metrics.csv, checkpoints/best.ckpt, metrics.json, confusion.png and curves.png.
    With --split-by and --folds K (or loo) but no --fold, every fold is trained into
    fold-0/, fold-1/, ... and cv.json, cv.csv and a pooled confusion.png summarise them.

    Examples:
      emofs train head --encoders hubert,mae,videomae,eva --split-by speaker
      emofs train head -e egemaps --fusion attention --hidden 128 --epochs 50 --out runs/egemaps
      emofs train head -e egemaps --split-by speaker --folds 5 --normalize speaker
    """
    from heads.train import prefetch_lightning, train_head, use_trainer

    if trainer == "lightning":
        prefetch_lightning()  # import Lightning while the flags are checked and data loads
    cfg = _head_config(flags)
    if cfg.folds and cfg.fold is None:
        from heads.cv import cross_validate

        with use_trainer(trainer):
            cv = cross_validate(open_store(store), cfg, out=out)
        if as_json:
            echo_json(cv.as_dict())
        else:
            _print_cv(cv)
        return
    result = train_head(open_store(store), cfg, out=out, trainer=trainer)
    if as_json:
        echo_json(result.as_dict())
        return
    _print_figures({**result.test, "by_modalities": result.by_modalities},
                   title=f"{result.run_dir} test (best epoch {result.best_epoch})")
    typer.echo(f"run: {result.run_dir}")


def _print_cv(cv) -> None:
    from rich.console import Console
    from rich.table import Table

    keys = ("uar", "war", "weighted_f1", "macro_f1")
    table = Table("fold", "test groups", "clips", "UAR", "WAR", "weighted F1", "macro F1",
                  title=f"{cv.run_dir}: {len(cv.rows)}-fold cross-validation (test folds)")
    for row in cv.rows:
        table.add_row(str(row["fold"]), row["test_groups"], str(row["n_test"]), *(f"{row[k]:.3f}" for k in keys))
    table.add_row("mean ± std", "", str(sum(r["n_test"] for r in cv.rows)),
                  *(f"{cv.mean[k]:.3f} ± {cv.std[k]:.3f}" for k in keys))
    Console(width=120).print(table)
    typer.echo(f"run: {cv.run_dir}")


def _print_figures(figures: dict[str, Any], *, title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    head = Table("clips", "accuracy (WAR)", "weighted F1", "macro F1", "UAR", title=title)
    head.add_row(str(figures["n"]), *(f"{figures[k]:.3f}" for k in ("accuracy", "weighted_f1", "macro_f1", "uar")))
    per = Table("label", "precision", "recall", "F1", "support")
    for name, row in figures["per_class"].items():
        per.add_row(name, f"{row['precision']:.3f}", f"{row['recall']:.3f}", f"{row['f1']:.3f}", str(row["support"]))
    console = Console()
    console.print(head)
    console.print(per)
    if figures.get("by_modalities"):
        patterns = Table("modalities", "clips", "accuracy (WAR)", "weighted F1", "macro F1", "UAR",
                         title="by presence pattern")
        for name, row in figures["by_modalities"].items():
            patterns.add_row(name, str(row["n"]),
                             *(f"{row[k]:.3f}" for k in ("accuracy", "weighted_f1", "macro_f1", "uar")))
        console.print(patterns)


def eval_command(
    run: _RunArg,
    where: WhereOpt = None,
    drop_missing: _DropMissingOpt = False,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Score a trained head on any labelled clips of the store.

    Examples:
      emofs eval runs/20250101-120000-hubert+mae --where "split = 'test'"
      emofs eval runs/egemaps --where "speaker = '1001'" --json
    """
    from heads.predict import evaluate_run

    figures = evaluate_run(open_store(store), run, where=where, drop_missing=drop_missing)
    seen = figures["seen_in_training"]
    if seen["train"] or seen["val"]:
        typer.echo(f"warning: {seen['train']} of these {seen['clips']} clips trained the run and {seen['val']} "
                   f"validated it: these figures are not a held-out test (its test clips are the 'test' rows of "
                   f"{run}/splits.csv)", err=True)
    if as_json:
        echo_json(figures)
        return
    _print_figures(figures, title=f"{figures['run_id']}" + (f" where {where}" if where else ""))


@_head_options(skip=("workers",))
def ablate_command(out: _OutOpt = None, fmt: FormatOpt = "table", store: StoreOpt = None,
                   trainer: _TrainerOpt = "auto", **flags: Any) -> None:
    """Train a head on every non-empty subset of --encoders (same clips, split and seed).

    Writes one run per subset plus ablation.csv and ablation.png under --out.

    Examples:
      emofs ablate --encoders hubert,mae,videomae,eva --split-by speaker
      emofs ablate -e egemaps,text --epochs 20 --out runs/ablation-1 --format csv
    """
    from heads.train import ablate, use_trainer

    check_format(fmt)
    cfg = _head_config(flags)
    with use_trainer(trainer):
        frame = ablate(open_store(store), cfg, out=out)
    print_frame(frame, fmt, default_columns=["encoders", "accuracy", "weighted_f1", "macro_f1", "uar",
                                             f"val_{cfg.monitor}", "best_epoch"])


def predict_command(
    run: _RunArg,
    where: WhereOpt = None,
    name: Annotated[
        Optional[str], typer.Option("--name", help="Dataset name predictions/<name>.lance. [default: run id]")
    ] = None,
    drop_missing: _DropMissingOpt = False,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Predict clips with a trained head into predictions/<run>.lance (upsert by clip_id).

    Rows: clip_id, run_id, label, confidence, probs, prob_<label> per class,
    model_fingerprint, predicted_at.

    Examples:
      emofs predict runs/20250101-120000-hubert+mae
      emofs predict runs/egemaps --where "label IS NULL" --name egemaps-unlabelled
    """
    from heads.predict import predict_to_store

    report = predict_to_store(open_store(store), run, where=where, name=name, drop_missing=drop_missing)
    if as_json:
        echo_json(report)
        return
    counts = ", ".join(f"{k} {v}" for k, v in report["labels"].items())
    used = ", ".join(f"{k} {v}" for k, v in report["modalities"].items())
    typer.echo(f"{report['rows']} clips -> {report['dataset']} (version {report['version']}): {counts}; "
               f"modalities: {used}")


def embed_command(
    run: _RunArg,
    where: WhereOpt = None,
    name: Annotated[
        Optional[str], typer.Option("--name", help="Feature set features/<name>.lance. [default: <run id>-emb]")
    ] = None,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Write a trained head's fused projection (the classifier's input) as a feature set.

    The learned emotion space: index it and search by emotion as the run learned it.

    Examples:
      emofs embed runs/egemaps-spk --name emo
      emofs index build --encoder emo && emofs similar crema_d/mp4/1001_DFA_SAD_XX.mp4 --index emo
    """
    from heads.embed import embed_run

    report = embed_run(open_store(store), run, where=where, name=name)
    if as_json:
        echo_json(report)
        return
    skipped = f" ({report['skipped']} clips lacking features skipped)" if report["skipped"] else ""
    typer.echo(f"{report['rows']} clips -> features/{report['feature_set']} (dim {report['dim']}, "
               f"version {report['version']}) from run {report['run_id']}{skipped}")
