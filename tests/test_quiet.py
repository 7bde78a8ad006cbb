"""A default run prints only emofs' own lines: no Lightning tips, FutureWarnings,
deprecation warnings or other libraries' progress bars (issue 26, item 5).

Each command runs as the ``emofs`` console script in a fresh process (as a user runs it,
warnings at Python's defaults), with stdout and stderr captured together.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO

LABELS = ["angry", "happy", "neutral", "sad"]
#: Substrings of lines emofs never writes: warnings modules, Lightning's banners and tips,
#: tqdm bars, transformers / torch notices.
FOREIGN = re.compile(
    r"Warning|warn\(|LOCAL_RANK|GPU available|TPU available|HPU available|tip:|💡|litlogger|LitLogger|"
    r"lightning\.pytorch|pytorch_lightning|\bit/s\]|s/it\]|\d+%\|[█▏▎▍▌▋▊▉ ]*\||Trainer\(|Seed set to|"
    r"You are using|`torch_dtype`|Loading checkpoint shards|Generation flags|Setting `pad_token_id`")


def _emofs(args: list[str], cwd: Path, env: dict[str, str]) -> str:
    script = Path(sys.executable).with_name("emofs")
    command = [str(script)] if script.exists() else [sys.executable, "-c", "import cli; cli.main()"]
    done = subprocess.run(command + args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    out = done.stdout + done.stderr
    assert done.returncode == 0, f"emofs {' '.join(args)} exited {done.returncode}:\n{out}"
    return out


def _foreign(out: str) -> list[str]:
    return [line for line in out.splitlines() if FOREIGN.search(line)]


@pytest.fixture(scope="module")
def small_store(tmp_path_factory):
    """A store of 32 labelled clips with two synthetic feature sets (audio-only, video-only
    and both), descriptions on some, and the environment to run emofs in it."""
    import pyarrow as pa

    from featurestore import Store
    from featurestore.features import write_features

    root = tmp_path_factory.mktemp("quiet")
    store = Store(root / "store", create=True)
    rng = np.random.default_rng(0)
    ids = [f"c{i:02d}" for i in range(32)]
    labels = [LABELS[i % 4] for i in range(32)]
    store.upsert_clips(pa.table({"clip_id": ids, "name": ids, "label": labels,
                                 "speaker": [f"s{i % 4}" for i in range(32)],
                                 "subtitle": [f"I feel {lab}" for lab in labels]}))
    for name, dim in (("a", 12), ("v", 8)):
        centres = rng.normal(size=(4, dim)) * 3
        keep = [i for i in range(32) if not (name == "a" and i % 8 == 1) and not (name == "v" and i % 8 == 2)]
        vectors = np.stack([centres[LABELS.index(labels[i])] + rng.normal(size=dim) for i in keep])
        write_features(store, name, [ids[i] for i in keep], vectors,
                       {"encoder": name, "weights": "synthetic", "dim": dim})
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHONWARNINGS", "EMOFS_"))}
    env.update(EMOFS_STORE=str(root / "store"), HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO))
    return root, env


def test_llm_tiny_and_a_default_llm_train_print_only_emofs_lines(small_store):
    root, env = small_store
    out = _emofs(["llm", "tiny", "tiny-llama"], root, env)
    out += _emofs(["llm", "train", "--base", "tiny-llama", "--encoders", "a,v", "--video", "none", "--epochs", "2",
                   "--out", "runs/llm"], root, env)
    assert "trained" in out and (root / "runs" / "llm" / "config.json").is_file()
    assert _foreign(out) == [], out


def test_default_ablate_and_a_lightning_head_print_only_emofs_lines(small_store):
    root, env = small_store
    out = _emofs(["ablate", "-e", "a,v", "--drop-missing", "--epochs", "5", "--out", "runs/abl"], root, env)
    assert (root / "runs" / "abl" / "ablation.csv").is_file()
    out += _emofs(["train", "head", "-e", "a,v", "--trainer", "lightning", "--epochs", "3", "--out", "runs/lit"],
                  root, env)
    assert (root / "runs" / "lit" / "metrics.json").is_file()
    assert _foreign(out) == [], out


def test_the_foreign_line_filter_catches_what_users_saw():
    seen = [
        "💡 Tip: For seamless cloud uploads and versioning, try installing [litmodels]",
        "GPU available: False, used: False",
        "LOCAL_RANK: 0 - CUDA_VISIBLE_DEVICES: []",
        "/x/site-packages/torch/utils/data.py:12: FutureWarning: `foo` is deprecated",
        "  warn(msg)",
        "Loading checkpoint shards: 100%|██████████| 2/2 [00:00<00:00, 12.1it/s]",
    ]
    assert _foreign("\n".join(seen)) == seen
    assert _foreign("warning: 3 clips skipped (no answer)\ntrained 24 steps on 31 clips") == []
