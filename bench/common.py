"""Shared helpers for the side-by-side benchmarks: timing with medians, tables, the machine line, results."""

from __future__ import annotations

import os
import platform
import statistics
import time
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out"


def machine() -> str:
    mem = ""
    try:
        with open("/proc/meminfo") as fh:
            mem = f", {int(fh.readline().split()[1]) / 2**20:.0f} GiB"
    except OSError:
        pass
    return f"{os.cpu_count()} cores{mem}, {platform.system()} {platform.machine()}, Python {platform.python_version()}"


def timed(fn, repeat: int = 3):
    """Run `fn` `repeat` times; return (median seconds, all seconds, last result)."""
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times, result


def spread(xs: list[float], *, runs: bool = True) -> str:
    """Median seconds with the min-max of the runs (and their count): how every benchmark quotes a time."""
    if len(xs) == 1:
        return f"{xs[0]:.1f} s" + (" (1 run)" if runs else "")
    return f"{statistics.median(xs):.1f} s ({min(xs):.1f}–{max(xs):.1f}" + (f", {len(xs)} runs)" if runs else ")")


def table(headers: list[str], rows: list[list]) -> str:
    cells = [[str(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    body = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |" for r in cells]
    return "\n".join([line, sep, *body])


def record(section: str, text: str) -> None:
    """Replace (or append) `## section` in bench/README.md with `text`."""
    readme = Path(__file__).resolve().parent / "README.md"
    current = readme.read_text() if readme.exists() else "# tally benchmarks\n\nRun with `make bench`.\n"
    head = f"## {section}\n"
    block = head + "\n" + text.strip() + "\n"
    if head in current:
        before, rest = current.split(head, 1)
        after = rest.split("\n## ", 1)
        current = before + block + ("\n## " + after[1] if len(after) > 1 else "")
    else:
        current = current.rstrip() + "\n\n" + block
    readme.write_text(current)
