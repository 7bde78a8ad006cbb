"""The encoder contract, weights resolution and the spec every feature set records."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from featurestore.errors import InputError

__all__ = [
    "Need",
    "Tag",
    "Weights",
    "Encoded",
    "Encoder",
    "resolve_device",
    "emofs_version",
    "hash_files",
    "TINY_SEED",
    "hub_cache",
    "hub_reachable",
    "pool_tokens",
]

TINY_SEED = 0
#: Bumped when an encoder's pre/post-processing code changes its output.
CODE_VERSION = 1


@dataclass(frozen=True)
class Need:
    """What an encoder consumes from a clip (computed once per clip in a worker).

    ``kind`` is one of ``audio`` (16 kHz mono float32), ``peak_face`` (face crop of the peak
    frame, ``size`` px), ``face_clip`` (``frames`` face crops spread over the clip),
    ``peak_image`` (the full peak frame, short side resized to ``size`` and centre-cropped),
    ``first_image`` (the first decoded frame squashed to ``size`` x ``size``)
    or ``subtitle`` (the clip's text).
    """

    kind: str
    size: int = 224
    frames: int = 16

    @property
    def modality(self) -> str:
        return {"audio": "audio", "subtitle": "text"}.get(self.kind, "video")


@dataclass(frozen=True)
class Tag:
    """A registered weights tag: where the weights come from and what they output."""

    weights: str  # hub id, "tiny", "bundled", or "none"
    dim: int
    token_dim: int | None = None
    note: str = ""


@dataclass(frozen=True)
class Weights:
    """Resolved weights of one encoder reference."""

    source: str  # tiny | hub | local | bundled | none
    location: str  # hub id or directory ("" for tiny / none)
    tag: str | None = None


@dataclass
class Encoded:
    """One clip's output: ``vector (D,)`` float32 and optional ``tokens (T, Dt)``."""

    vector: np.ndarray
    tokens: np.ndarray | None = None


class Encoder:
    """Base class of every registered encoder family.

    Subclasses set the class attributes, implement :meth:`_load` (build or load the
    model; may raise, the caller maps failures to one :class:`InputError`),
    :meth:`encode` and :meth:`_describe` (family-specific spec fields).
    """

    name: ClassVar[str]
    modality: ClassVar[str]  # audio | video | text
    input_description: ClassVar[str]
    tags: ClassVar[dict[str, Tag]]
    default_tag: ClassVar[str]
    need: ClassVar[Need]
    #: Token options this encoder accepts (``{"tokens": default}``) or {}.
    token_defaults: ClassVar[dict[str, int]] = {}
    #: Named settings (``{"pooling": ("last", "mertools")}``, the first is the default):
    #: another recipe of the same model, not another encoder (``--option hubert.pooling=mertools``).
    choices: ClassVar[dict[str, tuple[str, ...]]] = {}
    #: True for CPU feature extractors without batching (openSMILE): `extract` runs them
    #: in the decoding workers, beside the decode, so they run in parallel across workers
    #: and leave the main process to the batched neural encoders (and the GPU fed).
    in_worker: ClassVar[bool] = False

    def __init__(self, weights: Weights, *, device: str = "cpu", options: dict[str, Any] | None = None):
        self.weights = weights
        self.device = device
        defaults = {**self.token_defaults, **{k: v[0] for k, v in self.choices.items()}}
        self.options = {**defaults, **(options or {})}
        unknown = set(self.options) - set(defaults)
        if unknown:
            raise InputError(
                f"encoder {self.name!r} takes no option(s) {', '.join(sorted(unknown))} "
                f"(valid: {', '.join(defaults) or 'none'})"
            )
        for key, value in self.options.items():
            if key in self.choices:
                if value not in self.choices[key]:
                    raise InputError(f"--option {self.name}.{key}={value!r}: valid values are "
                                     f"{', '.join(self.choices[key])}")
            elif not isinstance(value, int) or value < 1:
                raise InputError(f"--tokens {self.name}={value!r}: must be a positive integer")
        self.dim: int = 0
        self.token_dim: int | None = None
        self.identity: dict[str, Any] = {}
        self._load()

    # ----------------------------------------------------------- to override
    def _load(self) -> None:
        raise NotImplementedError

    def _describe(self) -> dict[str, Any]:
        raise NotImplementedError

    def encode(self, inputs: list[Any]) -> list[Encoded]:
        """Encode a batch of prepared inputs (one per clip, of kind ``self.need``)."""
        raise NotImplementedError

    # ---------------------------------------------------------------- common
    @property
    def ref(self) -> str:
        """The reference that rebuilds this encoder (``name:tag`` or ``name:location``)."""
        return f"{self.name}:{self.weights.tag or self.weights.location}"

    def spec(self, dtype: str, media=None) -> dict[str, Any]:
        """The frozen spec stored with the feature set (its fingerprint decides freshness).

        The one place a feature-set spec is assembled: ``extract``, ``extract_file`` and
        the Ray engine all call it, so equal settings give equal fingerprints.

        Args:
            dtype: stored float type (``float16`` | ``float32``).
            media: the :class:`~extractors.media.MediaConfig` clips are decoded with
                (default settings when None); recorded for audio and video encoders, with
                the face-crop and peak-frame methods for video ones.
        """
        spec = {
            "encoder": self.name,
            "ref": self.ref,
            "modality": self.modality,
            "input": self.input_description,
            "need": {"kind": self.need.kind, "size": self.need.size, "frames": self.need.frames},
            "weights_source": self.weights.source,
            "weights": self.weights.location or self.weights.tag,
            **self.identity,
            **self._describe(),
            "dim": self.dim,
            "token_dim": self.token_dim,
            "options": self.recorded_options(),
            "dtype": dtype,
            "code_version": CODE_VERSION,
            "emofs_version": emofs_version(),
        }
        if self.modality != "text":
            from ..media import MediaConfig

            spec["media"] = (media or MediaConfig()).as_dict()
        if self.modality == "video":
            from ..detectors import describe_detector
            from ..faces import MAX_DETECT
            from ..peak import PEAK_METHOD

            spec["faces"] = {"detector": describe_detector((media or MediaConfig()).face_detector),
                             "detect_frames": MAX_DETECT, "margin": 0.25,
                             "fallback": "nearest detected box, else centre crop"}
            spec["peak_frame"] = PEAK_METHOD
        return spec

    def recorded_options(self) -> dict[str, Any]:
        """The options a spec records: every token option, and the named settings that differ
        from their default (so a default recipe keeps the fingerprint it always had)."""
        return dict(sorted((k, v) for k, v in self.options.items()
                           if k not in self.choices or v != self.choices[k][0]))

    def torch_device(self):
        import torch

        return torch.device(self.device)

    def autocast(self):
        """Mixed precision on GPU, a no-op context on CPU."""
        import contextlib

        import torch

        if self.device.startswith("cuda"):
            return torch.autocast(device_type="cuda", dtype=torch.float16)
        return contextlib.nullcontext()


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when available else ``cpu``; validates explicit choices."""
    if device not in ("auto", "cpu", "cuda") and not device.startswith("cuda:"):
        raise InputError(f"--device must be auto, cpu or cuda (got {device!r})")
    if device == "cpu":
        return "cpu"
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if not torch.cuda.is_available():
        raise InputError("--device cuda but no CUDA device is visible: use --device cpu or auto")
    return device


def emofs_version() -> str:
    """The installed emofs version (``0+unknown`` when running from an uninstalled tree)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("emofs")
    except PackageNotFoundError:
        return "0+unknown"


_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


def hash_files(directory: str | os.PathLike) -> str:
    """sha256 over a weights directory's weight files and configs (name + bytes)."""
    root = Path(directory)
    digest = hashlib.sha256()
    files = sorted(
        p for p in root.rglob("*")
        if p.is_file() and (p.suffix in _WEIGHT_SUFFIXES or p.name.endswith("config.json"))
    )
    for path in files:
        digest.update(path.relative_to(root).as_posix().encode())
        with open(path, "rb") as handle:
            while block := handle.read(1 << 23):
                digest.update(block)
    return digest.hexdigest()[:32]


def config_hash(config: dict[str, Any]) -> str:
    """Short hash of a model config dict (identifies tiny random weights with the seed)."""
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class HubCheck:
    """Where a hub id's files are, if anywhere on this machine."""

    cached_dir: Path | None = None
    revision: str | None = None
    offline: bool = field(default_factory=lambda: os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"))


def hub_cache(repo_id: str, filename: str = "config.json") -> HubCheck:
    """Look ``repo_id`` up in the local Hugging Face cache (never touches the network)."""
    check = HubCheck()
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(repo_id, filename)
    except Exception:  # noqa: BLE001 - malformed ids etc. mean "not cached"
        found = None
    if isinstance(found, str):
        check.cached_dir = Path(found).parent
        check.revision = check.cached_dir.name
    return check


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face endpoint accepts a TCP connection (a few seconds at most)."""
    import os
    import socket
    from urllib.parse import urlparse

    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def pool_tokens(frames, limit: int) -> np.ndarray:
    """Average-pool a torch ``(T, D)`` frame sequence to at most ``limit`` tokens (the LLM's
    frame tokens of the speech encoders).  # (T', D)"""
    import torch.nn.functional as F

    if frames.shape[0] <= limit:
        return frames.cpu().numpy()
    return F.adaptive_avg_pool1d(frames.T[None], limit)[0].T.cpu().numpy()  # (limit, D)
