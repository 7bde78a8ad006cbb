"""The analyst app command: ``emofs app``."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from .common import StoreOpt, open_store

__all__ = ["app_command"]


def app_command(
    store: StoreOpt = None,
    host: Annotated[str, typer.Option("--host", help="Address to bind; not loopback needs --token.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="TCP port.")] = 8765,
    read_only: Annotated[bool, typer.Option("--read-only", help="Turn label corrections off.")] = False,
    token: Annotated[
        Optional[str],
        typer.Option("--token", envvar="EMOFS_APP_TOKEN",
                     help="Secret every request must carry (`auto`: a random one); required off loopback."),
    ] = None,
    max_upload_mb: Annotated[float, typer.Option("--max-upload-mb", help="Largest file the upload search takes.")] = 50.0,
    runs: Annotated[
        Optional[str],
        typer.Option("--runs", help="Folder of `train head` run directories (modality weights, CV "
                     "tables); default $EMOFS_APP_RUNS, else runs (either may not exist yet)."),
    ] = None,
) -> None:
    """Serve the analyst web page over the store: search, listen, watch, filter, map, correct.

    The page and its JSON API (/api/clips, /api/similar/CLIP, /media/CLIP, schema at
    /api/openapi.json) are served from this machine only, with every asset local.

    Examples:
      emofs app --store ./emofs-store            # then open http://127.0.0.1:8765/
      emofs app --read-only --port 9000 --runs ./runs
      emofs app --host 0.0.0.0 --token auto      # prints the URL with its token
    """
    from workflows.app import AppConfig, serve

    config = AppConfig(store=store, host=host, port=port, read_only=read_only, token=token,
                       max_upload_mb=max_upload_mb, runs_dir=runs)
    target = open_store(store)  # a missing store fails here, in one line
    typer.echo(f"emofs app: {config.url()}  (store {target.uri}{', read-only' if read_only else ''}; "
               "Ctrl+C stops it)", err=True)
    serve(config)
