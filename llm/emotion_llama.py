"""Import the released Emotion-LLaMA checkpoint (MiniGPT-v2 layout) as an emofs llm run.

``Emotion_LLaMA.pth`` / ``checkpoint_best.pth`` hold, under ``model``, the weights that
trained (``minigpt4/models/minigpt_v2.py``): the LoRA adapters of LLaMA-2-7b-chat's
``q_proj`` / ``v_proj`` (PEFT names under ``llama_model.``) and five projectors:

================== =========================== ==================================
checkpoint key     input                       emofs projector (feature set)
================== =========================== ==================================
llama_proj         4 merged EVA patch tokens   ``video`` (``eva`` tokens, merge 4)
feats_llama_proj1  FaceMAE utterance vector    ``mae``
feats_llama_proj2  VideoMAE utterance vector   ``videomae``
feats_llama_proj3  HuBERT HL-UTT vector        ``hubert``
cls_tk_llama_proj  EVA CLS token               ``eva`` (the set's vector)
================== =========================== ==================================

``encode_img`` lays the tokens out as ``[256 EVA tokens, FaceMAE, VideoMAE, audio, CLS]``;
``prompt_wrap`` puts the first 256 at ``<VideoHere>`` and the last 4 at ``<FeatureHere>``,
which is emofs' own splice with the feature sets in that order. The run takes the
``emotion-llama`` prompt style (the released prompt text, ``[INST]`` turns, a BOS id, answers
cut at the newline they were trained to end with) and features extracted with
``emofs extract --recipe emotion-llama``.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any, Sequence

from featurestore.errors import InputError

from .config import LLMConfig

log = logging.getLogger(__name__)

__all__ = ["import_checkpoint", "read_released", "EMOTION_LLAMA_LABELS", "PROJECTOR_KEYS", "recipe_mismatches"]

#: The label list of the released emotion instruction (``first_face.py``), in its order.
EMOTION_LLAMA_LABELS = ("happy", "sad", "neutral", "angry", "worried", "surprise", "fear", "contempt", "doubt")
#: checkpoint projector -> emofs projector name (feature set, or ``video``).
PROJECTOR_KEYS = {"llama_proj": "video", "feats_llama_proj1": "mae", "feats_llama_proj2": "videomae",
                  "feats_llama_proj3": "hubert", "cls_tk_llama_proj": "eva"}
_LORA = re.compile(r"^llama_model\.(base_model\.model\.model\.layers\.(\d+)\.self_attn\.(\w+)\.lora_([AB]))"
                   r"(?:\.default)?\.weight$")
#: Trainable modules of MiniGPTBase that Emotion-LLaMA's forward never uses (its unused
#: ``Attention`` fusion head): saved with the checkpoint, skipped here.
_UNUSED_PREFIXES = ("attention.",)


def read_released(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(state, info)`` of a released checkpoint: the ``model`` weights and what else it
    says (``epoch``, LoRA settings of its ``config`` when saved).

    Raises:
        InputError: not a file, not loadable with ``weights_only=True``, or no weights.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise InputError(f"checkpoint {path} does not exist: pass the released Emotion_LLaMA.pth")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - pickle / zip errors of many kinds: one line
        reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise InputError(f"cannot read {path} as a PyTorch checkpoint with weights_only=True ({reason}): "
                         "pass the released Emotion_LLaMA.pth / checkpoint_best.pth") from None
    state = data.get("model", data) if isinstance(data, dict) else None
    if not isinstance(state, dict) or not state or not all(hasattr(v, "shape") for v in state.values()):
        raise InputError(f"{path} holds no weights under 'model': not a MiniGPT-v2 / Emotion-LLaMA checkpoint")
    info: dict[str, Any] = {"epoch": data.get("epoch") if isinstance(data, dict) else None}
    model_cfg = ((data.get("config") or {}).get("model") or {}) if isinstance(data, dict) else {}
    for key in ("lora_r", "lora_alpha", "lora_dropout"):
        if key in model_cfg:
            info[key] = model_cfg[key]
    return state, info


def _split(state: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """``(lora, projectors, unknown keys)`` of a checkpoint's weights; LoRA keys become
    PEFT's (``base_model.model.model.layers.N.self_attn.q_proj.lora_A.default.weight``)."""
    lora, projectors, unknown = {}, {}, []
    for key, tensor in state.items():
        m = _LORA.match(key)
        if m:
            lora[f"{m.group(1)}.default.weight"] = tensor
            continue
        module, _, param = key.rpartition(".")
        if module in PROJECTOR_KEYS and param in ("weight", "bias"):
            projectors[f"{PROJECTOR_KEYS[module]}.{param}"] = tensor
        elif not key.startswith(_UNUSED_PREFIXES):
            unknown.append(key)
    return lora, projectors, unknown


def _check_layout(path: Path, lora: dict, projectors: dict, unknown: list[str]) -> tuple[int, list[str]]:
    """LoRA rank and target modules, after checking the released layout is all there."""
    if unknown:
        shown = ", ".join(unknown[:3]) + (f" (+{len(unknown) - 3} more)" if len(unknown) > 3 else "")
        raise InputError(f"{path}: keys outside the Emotion-LLaMA layout: {shown}; pass the released checkpoint")
    missing = [f"{k}.{p}" for k in PROJECTOR_KEYS for p in ("weight", "bias")
               if f"{PROJECTOR_KEYS[k]}.{p}" not in projectors]
    if missing:
        raise InputError(f"{path}: missing {', '.join(missing)}: not an Emotion-LLaMA (MiniGPT-v2 + features) checkpoint")
    if not lora:
        raise InputError(f"{path}: no LoRA weights (llama_model.*.lora_A/B): not a LoRA-tuned checkpoint")
    ranks = {t.shape[0] for k, t in lora.items() if ".lora_A." in k}
    if len(ranks) != 1:
        raise InputError(f"{path}: LoRA ranks differ across modules ({sorted(ranks)})")
    targets = sorted({k.split(".self_attn.")[1].split(".")[0] for k in lora})
    video, cls = projectors["video.weight"], projectors["eva.weight"]
    if video.shape[1] % cls.shape[1]:
        raise InputError(f"{path}: llama_proj takes {video.shape[1]} inputs, not a multiple of the EVA width "
                         f"{cls.shape[1]} of cls_tk_llama_proj")
    return ranks.pop(), targets


def import_checkpoint(
    checkpoint: str | Path,
    base: str,
    out_dir: str | Path,
    *,
    feature_sets: Sequence[str] = ("mae", "videomae", "hubert"),
    video_set: str = "eva",
    labels: Sequence[str] = EMOTION_LLAMA_LABELS,
    lora_alpha: float | None = None,
    precision: str = "auto",
) -> Path:
    """Write an emofs llm run holding a released Emotion-LLaMA checkpoint on ``base``.

    Args:
        checkpoint: ``Emotion_LLaMA.pth`` (MiniGPT-v2 layout, read ``weights_only``).
        base: the LLaMA-2-7b-chat directory (or hub id) the checkpoint was tuned from.
        out_dir: the run folder to write (``emofs llm ask/eval --run``, ``label --llm``).
        feature_sets: the store's feature sets for ``feats_llama_proj1/2/3`` (FaceMAE,
            VideoMAE, audio), in that order.
        video_set: the feature set whose tokens feed ``llama_proj`` and whose vector (the
            CLS token) feeds ``cls_tk_llama_proj``.
        labels: the label list named in the emotion instruction.
        lora_alpha: LoRA alpha (default: the checkpoint's config, else 16 as released).

    Raises:
        InputError: keys or shapes that do not match the released layout or ``base``
            (the message names them).
    """
    import torch

    from extractors.probe import sha256_file

    from .model import EmotionLLM

    path = Path(checkpoint)
    state, info = read_released(path)
    lora, projectors, unknown = _split(state)
    rank, targets = _check_layout(path, lora, projectors, unknown)
    if len(feature_sets) != 3 or len(set(feature_sets)) != 3 or video_set in feature_sets:
        raise InputError("--encoders takes three distinct feature sets (FaceMAE, VideoMAE, audio), "
                         f"not the video set {video_set!r}")
    names = dict(zip(("mae", "videomae", "hubert"), feature_sets), eva=video_set, video="video")
    projectors = {f"{names[k.split('.')[0]]}.{k.split('.')[1]}": v for k, v in projectors.items()}
    dims = {n: int(projectors[f"{n}.weight"].shape[1]) for n in [*feature_sets, video_set, "video"]}
    alpha = lora_alpha if lora_alpha is not None else info.get("lora_alpha", 16)
    config = LLMConfig(
        base=base, feature_encoders=(*feature_sets, video_set), video_encoder=video_set,
        merge=dims["video"] // dims[video_set], labels=list(labels), standardize=False,
        lora_r=rank, lora_alpha=alpha, lora_dropout=float(info.get("lora_dropout", 0.05)),
        target_modules=tuple(targets), precision=precision, max_new_tokens=20,
        prompt_style="emotion-llama",
    )
    model = EmotionLLM.create(config, {k: dims[k] for k in (*feature_sets, video_set, "video")})
    hidden = model.lm.get_base_model().config.hidden_size
    layers = model.lm.get_base_model().config.num_hidden_layers
    if projectors["video.weight"].shape[0] != hidden:
        raise InputError(f"{path}: the projectors output {projectors['video.weight'].shape[0]} wide, --base "
                         f"{base} is {hidden} wide: pass the LLaMA the checkpoint was tuned from (LLaMA-2-7b-chat)")
    _load_lora(model, lora, path, base, layers)
    with torch.no_grad():
        for name, proj in model.projectors.items():
            proj.weight.copy_(projectors[f"{name}.weight"].float())
            proj.bias.copy_(projectors[f"{name}.bias"].float())
    model.save(out_dir, extra={"imported": {
        "checkpoint": str(path.resolve()), "sha256": sha256_file(path), "epoch": info.get("epoch"),
        "layout": "MiniGPT-v2 / Emotion-LLaMA", "projectors": {k: names[v] for k, v in PROJECTOR_KEYS.items()},
        "lora": {"r": rank, "alpha": alpha, "targets": targets, "tensors": len(lora)},
    }, "labels": list(labels)})
    return Path(out_dir)


def _load_lora(model, lora: dict, path: Path, base: str, layers: int) -> None:
    """Copy the LoRA tensors into the PEFT model, refusing any key or shape it lacks."""
    import torch

    own = {k: v for k, v in model.lm.state_dict().items() if ".lora_" in k}
    deepest = max(int(k.split(".layers.")[1].split(".")[0]) for k in lora)
    if deepest >= layers:
        raise InputError(f"{path}: LoRA weights for layer {deepest}, --base {base} has {layers} layers: "
                         "pass the LLaMA the checkpoint was tuned from")
    absent = sorted(set(lora) - set(own))
    if absent:
        raise InputError(f"{path}: --base {base} has no module for {absent[0]}")
    for key, tensor in lora.items():
        if tuple(tensor.shape) != tuple(own[key].shape):
            raise InputError(f"{path}: {key} is {tuple(tensor.shape)}, --base {base} needs {tuple(own[key].shape)}")
    untouched = sorted(set(own) - set(lora))
    if untouched:
        raise InputError(f"{path}: no weights for {len(untouched)} LoRA tensors of --base {base} "
                         f"(e.g. {untouched[0]}): the checkpoint covers fewer layers than the base")
    with torch.no_grad():
        params = dict(model.lm.named_parameters())
        for key, tensor in lora.items():
            params[key].copy_(tensor.to(params[key].dtype))


def recipe_mismatches(store, config: LLMConfig) -> list[str]:
    """What in the store's feature sets differs from Emotion-LLaMA's recipe (one phrase each)."""
    from featurestore.features import feature_spec

    from extractors.recipes import RECIPES

    wanted = RECIPES["emotion-llama"].options
    roles = dict(zip(("mae", "videomae", "hubert"), config.feature_encoders))
    roles["eva"] = config.video_encoder
    out = []
    for role, name in roles.items():
        spec = feature_spec(store, name) if name else None
        if spec is None:
            continue
        options = spec.get("options") or {}
        for key, value in wanted[role].items():
            if options.get(key) != value:
                out.append(f"{name} has {key}={options.get(key, 'default')} (the recipe: {value})")
    return out
