"""Loading weights for a resolved reference: tiny (random, seeded), local dir, or hub id."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from featurestore.errors import InputError

from .base import TINY_SEED, Weights, config_hash, hash_files, hub_cache, hub_reachable

__all__ = ["unavailable", "load_transformers", "seeded", "check_hub", "short_reason"]


def unavailable(name: str, location: str, reason: str) -> InputError:
    """The one error for weights that cannot be loaded, with the ways out."""
    return InputError(
        f"cannot load {name} weights {location!r} ({reason}): download the checkpoint where "
        f"there is network and pass its directory (`--encoders {name}:/path/to/dir`), or use "
        f"`--encoders {name}:tiny` for a trial run with random weights"
    )


def seeded(build: Callable[[], Any]) -> Any:
    """Build a model under a fixed torch seed (tiny weights are a function of the seed)."""
    import torch

    state = torch.random.get_rng_state()
    torch.manual_seed(TINY_SEED)
    try:
        return build()
    finally:
        torch.random.set_rng_state(state)


def check_hub(name: str, repo_id: str, filename: str = "config.json") -> dict[str, Any]:
    """Identity of a hub checkpoint; raises before any download when offline and uncached."""
    check = hub_cache(repo_id, filename)
    if check.cached_dir is None and check.offline:
        raise unavailable(name, repo_id, "not in the local Hugging Face cache and HF_HUB_OFFLINE is set")
    if check.cached_dir is None and not hub_reachable():
        raise unavailable(name, repo_id, "not in the local Hugging Face cache and the hub is unreachable")
    return {"revision": check.revision}


def load_transformers(name: str, model_cls, weights: Weights, tiny_config: Callable[[], Any],
                      tiny_kwargs: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """Build/load a transformers model; returns ``(model in eval mode, identity dict)``."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    if weights.source == "tiny":
        config = tiny_config()
        model = seeded(lambda: model_cls(config))
        identity = {"init": f"random normal, torch seed {TINY_SEED}", "config": tiny_kwargs,
                    "config_sha": config_hash(tiny_kwargs)}
    elif weights.source == "local":
        try:
            model = model_cls.from_pretrained(weights.location)
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise unavailable(name, weights.location, short_reason(exc)) from exc
        identity = {"sha256": hash_files(weights.location)}
    else:
        identity = check_hub(name, weights.location)
        try:
            model = model_cls.from_pretrained(weights.location)
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise unavailable(name, weights.location, short_reason(exc)) from exc
    model.eval()
    for param in model.parameters():
        param.requires_grad_(False)
    return model, identity


def is_local_dir(location: str) -> bool:
    return Path(location).expanduser().is_dir()


def short_reason(exc: BaseException) -> str:
    """The first line of an exception (its type when empty), at most 200 characters."""
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]
