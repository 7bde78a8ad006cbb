"""What every bench ends with: its figures, its targets met or not, one JSON object.

Benches run as scripts (``python bench/bench_x.py``), so this module is imported by its
plain name from the bench folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

__all__ = ["print_figures", "print_targets", "emit_json"]


def print_figures(figures: dict[str, Any]) -> None:
    """A two-column markdown table of ``figures``."""
    print("\n| figure | value |\n|---|---|")
    for key, value in figures.items():
        print(f"| {key} | {value} |")


def print_targets(targets: Sequence[tuple[str, Any, str, bool]]) -> None:
    """A markdown table of ``(name, measured, goal, met)`` rows."""
    print("\n| target | measured | goal | met |\n|---|---|---|---|")
    for name, value, goal, met in targets:
        print(f"| {name} | {value} | {goal} | {'yes' if met else 'NO'} |")


def emit_json(result: dict[str, Any], path: Path | None) -> None:
    """Print ``result`` as one JSON line, and write it (indented) to ``path`` if given."""
    print(json.dumps(result))
    if path:
        path.write_text(json.dumps(result, indent=2) + "\n")
