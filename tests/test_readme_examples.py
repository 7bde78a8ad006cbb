"""Every `emofs ...` example of the README and the docs pages runs, in order, on a demo store.

The examples are the lines starting with ``emofs `` in fenced ``bash`` / ``sh`` / ``console``
blocks of README.md, then of the pages in mkdocs.yml's nav order (continuation lines
joined). A block right after an HTML comment ``<!-- skip: REASON -->`` is not run: each of
its lines is a skipped test with that reason (real checkpoints, a bucket, the hub, a
cluster, a server that runs until Ctrl+C).

The demo store is what ``make demo`` builds, on a small subset of the real clips of
``../shared/data`` (30 clips: CREMA-D audio+video, audio-only and mp4; RAVDESS speech, face
crops and one full audio+video clip), laid out as in a checkout: the examples run in
``<tmp>/main`` with the clips in ``<tmp>/shared/data``, so ``../shared/data`` and the clip
ids they name are the real ones. ``new_clip.mp4`` and ``new_clips/`` (files a user brings)
are real clips that are not in the store. Commands run in-process through Typer's runner,
one test per example, in order.
"""

from __future__ import annotations

import csv
import re
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import REPO, SHARED_DATA, SHARED_LABELS

FENCE_LANGS = ("bash", "sh", "console")
SKIP = re.compile(r"<!--\s*skip:\s*(.*?)\s*-->")


@dataclass(frozen=True)
class Example:
    """One ``emofs`` command line of a markdown file."""

    source: str  # "README.md:34"
    command: str
    skip: str | None = None

    def args(self) -> list[str]:
        """The command's arguments after ``emofs`` (shell quoting and comments removed)."""
        words = shlex.split(self.command, comments=True)
        assert words[0] == "emofs", self.command
        return words[1:]


def extract_examples(path: Path, name: str | None = None) -> list[Example]:
    """The ``emofs`` lines of the fenced bash/sh/console blocks of a markdown file."""
    name = name or path.name
    examples: list[Example] = []
    lines = path.read_text().splitlines()
    pending_skip: str | None = None
    i = 0
    while i < len(lines):
        line = lines[i]
        marker = SKIP.search(line)
        if marker:
            pending_skip = marker.group(1)
            i += 1
            continue
        fence = re.match(r"^\s*```(\w*)", line)
        if not fence:
            if line.strip():
                pending_skip = None  # a skip marker applies to the block right after it
            i += 1
            continue
        lang, skip, pending_skip = fence.group(1), pending_skip, None
        i += 1
        while i < len(lines) and not re.match(r"^\s*```", lines[i]):
            start, text = i, lines[i].strip()
            while text.endswith("\\") and i + 1 < len(lines):
                i += 1
                text = text[:-1].rstrip() + " " + lines[i].strip()
            if lang == "console" and text.startswith("$ "):
                text = text[2:]
            if lang in FENCE_LANGS and text.startswith("emofs "):
                examples.append(Example(f"{name}:{start + 1}", text, skip))
            i += 1
        i += 1
    return examples


def doc_pages() -> list[Path]:
    """README.md, then the docs pages in mkdocs.yml's nav order."""
    import yaml

    config = yaml.safe_load((REPO / "mkdocs.yml").read_text())
    pages = []
    for entry in config["nav"]:
        (page,) = entry.values() if isinstance(entry, dict) else (entry,)
        pages.append(REPO / "docs" / page)
    return [REPO / "README.md", *pages]


def all_examples() -> list[Example]:
    return [ex for page in doc_pages() for ex in extract_examples(page, str(page.relative_to(REPO)))]


# --------------------------------------------------------------------- the parser itself
def test_extract_examples_reads_fences_continuations_and_skip_markers(tmp_path):
    page = tmp_path / "p.md"
    page.write_text(
        "text emofs info\n\n```bash\nemofs info   # a comment\nmake demo\nemofs train head -e a \\\n"
        "    --out runs/x\n```\n\n<!-- skip: needs a Ray cluster -->\n```bash\nemofs label x --engine ray\n```\n\n"
        "```python\nemofs = 1\n```\n```console\n$ emofs clips --where \"label = 'sad'\"\n```\n"
        "<!-- skip: only the next block -->\n\nsome prose\n```sh\nemofs errors\n```\n")
    examples = extract_examples(page)
    assert [e.command for e in examples] == [
        "emofs info   # a comment", "emofs train head -e a --out runs/x", "emofs label x --engine ray",
        "emofs clips --where \"label = 'sad'\"", "emofs errors"]
    assert [e.skip for e in examples] == [None, None, "needs a Ray cluster", None, None]
    assert examples[0].args() == ["info"]
    assert examples[3].args() == ["clips", "--where", "label = 'sad'"]
    assert examples[1].source == "p.md:6"


def test_docs_have_examples_and_every_skip_says_why():
    examples = all_examples()
    sources = {e.source.split(":")[0] for e in examples}
    assert {"README.md", "docs/guide.md"} <= sources
    assert sum(e.skip is None for e in examples) >= 30
    assert all(e.skip and len(e.skip) > 10 for e in examples if e.skip is not None)


# --------------------------------------------------------------------- the demo store
#: The subset of ../shared/data the demo store holds (path prefix, how many).
SUBSET = (("crema_d/1001_", 6), ("crema_d/1002_", 6), ("crema_d/mp4/", 5), ("ravdess_actor05/wav/", 8),
          ("ravdess_actor05/facecrop/", 4), ("ravdess_actor05/av/", 1))
#: Clips a README example names, kept whatever the subset's counts.
NAMED = ("ravdess_actor05/wav/03-01-04-01-01-01-05.wav",)


def _invoke(args: list[str]):
    from typer.testing import CliRunner

    import cli

    return CliRunner().invoke(cli.app, args)


def _run(args: list[str], where: str) -> str:
    result = _invoke(args)
    output = result.output
    assert result.exit_code == 0, f"{where}: `emofs {shlex.join(args)}` exited {result.exit_code}:\n{output}" + (
        f"\n{result.exception!r}" if result.exception and not isinstance(result.exception, SystemExit) else "")
    return output


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    """``<tmp>/main`` holding ./emofs-store as `make demo` leaves it, on a subset of the real
    clips in ``<tmp>/shared/data``; plus new_clip.mp4 and new_clips/ (not in the store)."""
    if not SHARED_LABELS.is_file():
        pytest.skip(f"real clips not found at {SHARED_DATA} (the ../shared/data folder)")
    import os

    root = tmp_path_factory.mktemp("readme")
    data, main = root / "shared" / "data", root / "main"
    main.mkdir(parents=True)
    with open(SHARED_LABELS, newline="") as handle:
        reader = csv.DictReader(handle)
        fields, rows = reader.fieldnames, list(reader)
    taken, kept, spare = {}, [], []
    for row in rows:
        prefix = next((p for p, _ in SUBSET if row["path"].startswith(p)), None)
        if prefix is None:
            continue
        if row["path"] in NAMED or taken.get(prefix, 0) < dict(SUBSET)[prefix]:
            taken[prefix] = taken.get(prefix, 0) + 1
            kept.append(row)
        else:
            spare.append(row)
    for row in kept:
        (data / row["path"]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(SHARED_DATA / row["path"], data / row["path"])
    with open(data / "labels.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(kept)
    # Files of the user's that are not in the store: one video, and a folder of two clips.
    shutil.copyfile(SHARED_DATA / next(r["path"] for r in spare if r["path"].startswith("crema_d/mp4/")),
                    main / "new_clip.mp4")
    (main / "new_clips").mkdir()
    for prefix in ("ravdess_actor05/wav/", "ravdess_actor05/facecrop/"):
        path = next(r["path"] for r in spare if r["path"].startswith(prefix))
        shutil.copyfile(SHARED_DATA / path, main / "new_clips" / Path(path).name)

    before = os.getcwd()
    os.chdir(main)
    try:
        # What `make demo` runs (Makefile: ENCODERS, HEAD_ENCODERS, RUN, SPACE), on the subset.
        encoders = "whisper,egemaps,fer,facemesh"
        for args in (["ingest", "../shared/data", "--labels", "../shared/data/labels.csv"],
                     ["extract", "--encoders", encoders],
                     ["train", "head", "--encoders", encoders, "--drop-missing", "--epochs", "30", "--threads", "1",
                      "--out", "runs/demo-head"],
                     ["embed", "runs/demo-head", "--name", "emotion"],
                     ["index", "build", "--encoder", "emotion"]):
            _run(args, "make demo")
    finally:
        os.chdir(before)
    return main


@pytest.fixture()
def in_demo(demo_dir, monkeypatch):
    monkeypatch.chdir(demo_dir)
    monkeypatch.delenv("EMOFS_STORE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # as `make demo`: no hub behind any example
    return demo_dir


EXAMPLES = all_examples()


@pytest.mark.parametrize("example", EXAMPLES, ids=[f"{e.source} {e.command[:60]}" for e in EXAMPLES])
def test_example_runs_on_the_demo_store(example: Example, request):
    if example.skip:
        pytest.skip(f"{example.source}: {example.skip}")
    request.getfixturevalue("in_demo")
    _run(example.args(), example.source)
