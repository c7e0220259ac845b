"""The OOM ladder's rung syntax, as config.ini and OOM_LADDER write it (`retry, scale:0.75, frames:0.5`).

Its own module, importing nothing of ours, so settings.py can parse OOM_LADDER without importing the job
model: imports go one way, from the job down to the settings.
"""

from __future__ import annotations

import dataclasses
import math


@dataclasses.dataclass(frozen=True)
class Rung:
    name: str  # as written in config.ini: "retry", "scale:0.75", "frames:0.5"
    scale: float = 1.0  # width and height factor
    frames: float = 1.0  # frame count factor


def parse_ladder(text: str) -> tuple[Rung, ...]:
    """`retry, scale:0.75, frames:0.5` -> rungs; raises ValueError naming the bad rung."""
    rungs = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        kind, _, arg = item.partition(":")
        if kind == "retry" and not arg:
            rungs.append(Rung(item))
            continue
        try:
            factor = float(arg)
        except ValueError:
            factor = math.nan
        if kind not in ("scale", "frames") or not 0 < factor < 1:
            raise ValueError(f"rung {item!r} must be retry, scale:F or frames:F with 0 < F < 1")
        rungs.append(Rung(item, scale=factor) if kind == "scale" else Rung(item, frames=factor))
    return tuple(rungs)
