"""The `emofs` command line: composes the per-domain command groups of :mod:`commands`.

Each command parses its flags, calls one library function and renders its report.
Errors raised on purpose (:class:`featurestore.EmofsError`) print as one line and exit 1;
``EMOFS_DEBUG=1`` shows the traceback instead.

Run as a process (the ``emofs`` script, :func:`main`), the CLI ends the process itself
once Python has cleaned up (:mod:`commands.process`): the native thread pools of Arrow,
Lance and faiss are never torn down at exit, where they could abort a finished command.
"""

from __future__ import annotations

from typing import NoReturn

import typer

from commands import app as analyst_app
from commands import extract, heads, index, interop, label, llm, store
from commands.common import EmofsGroup

__all__ = ["app", "main"]


def main() -> NoReturn:
    """The ``emofs`` console script: run the CLI on ``sys.argv`` and end the process with its
    exit code, after Python's clean-up and without native teardown
    (:func:`commands.process.run_and_exit`). ``app()`` from Python behaves as Typer's."""
    from commands.process import run_and_exit

    run_and_exit(app)


app = typer.Typer(
    cls=EmofsGroup,
    help="emofs: an offline feature store and trainer for multimodal emotion recognition.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Top-level commands, in the order `emofs --help` lists them.
app.command("ingest")(store.ingest_command)
app.command("info")(store.info_command)
app.command("clips")(store.clips_command)
app.command("errors")(store.errors_command)
app.command("similar")(index.similar_command)
app.command("extract")(extract.extract_command)
app.command("encoders")(extract.encoders_command)
app.command("eval")(heads.eval_command)
app.command("ablate")(heads.ablate_command)
app.command("predict")(heads.predict_command)
app.command("embed")(heads.embed_command)
app.command("label")(label.label_command)
app.command("vacuum")(store.vacuum_command)
app.command("check")(store.check_command)
app.command("samples")(store.samples_command)
app.command("app")(analyst_app.app_command)

# Command groups.
app.add_typer(index.index_app, name="index")
app.add_typer(interop.import_app, name="import")
app.add_typer(interop.export_app, name="export")
app.add_typer(llm.llm_app, name="llm")
app.add_typer(heads.train_app, name="train")

if __name__ == "__main__":  # pragma: no cover
    main()
