"""The `emofs` command line, one module per domain; ``cli.py`` composes them.

- :mod:`commands.common` — the error mapping (:class:`~commands.common.EmofsGroup`),
  the shared ``Annotated`` options and the table / JSON / CSV printers;
- :mod:`commands.console` — library log lines and progress bars on stderr;
- :mod:`commands.store` — ingest, info, clips, errors, vacuum, samples;
- :mod:`commands.extract` — extract, encoders;
- :mod:`commands.index` — index build / list / drop, similar;
- :mod:`commands.interop` — import features / annotations, export features;
- :mod:`commands.heads` — train head, eval, ablate, predict;
- :mod:`commands.label` — label;
- :mod:`commands.llm` — llm train / ask / eval / tiny.

Every command parses its flags, calls one library function and renders its report;
heavy libraries are imported inside the commands, so ``import cli`` stays cheap.
"""

__all__: list[str] = []
