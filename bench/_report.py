"""What every benchmark prints and stores: a Markdown table on stdout and a JSON report."""
from __future__ import annotations

import json
import os
import platform
from pathlib import Path

import numpy as np


def environment() -> dict:
    """Versions and the machine's load: timings on a shared machine mean little without the load."""
    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "cpus": os.cpu_count(),
        "load_average_1_5_15": list(os.getloadavg()),
    }


def print_table(header: list[str], rows: list[list[str]], align: str) -> None:
    """Markdown table; `align` has one letter per column, 'l' or 'r'."""
    if len(align) != len(header) or any(len(row) != len(header) for row in rows):
        raise ValueError("header, align and every row must have the same number of columns")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" if side == "l" else "---:" for side in align) + "|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


def write_json(path: Path, report: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {path}")


def print_targets(lines: list[str]) -> None:
    """The issue's targets, one 'met' / 'missed' line each with its numbers."""
    print("\ntargets:")
    for line in lines:
        print(f"  {line}")
