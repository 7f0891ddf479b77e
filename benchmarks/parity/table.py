"""One table of every parity result: `python -m benchmarks.parity.table [DIR] [--out=FILE]`.

Reads DIR/*.json (default experiments/results/parity/, as `python -m benchmarks.parity` writes them) and prints
a markdown table per result file and variant: the reference and its commit; the largest relative L2 distance over
the parameter groups with both sides in float64 after each compared update; ours in float32 against the float64
reference beside the reference's own float32 run against it (the rounding floor); then every difference found
and what became of it. With --out the table is also written to FILE.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from benchmarks.parity.common import worst

DEFAULT_DIR = Path(__file__).resolve().parents[2] / "experiments" / "results" / "parity"


def _fmt(value: float) -> str:
    return "0" if value == 0 else f"{value:.1e}"


def rows(result: dict) -> list[str]:
    out = []
    commit = result.get("reference_commit", "unknown")[:7]
    for variant in result["variants"]:
        at = sorted(variant["float64"], key=int)
        last = at[-1]
        float64 = " / ".join(_fmt(worst(variant["float64"][k])) for k in at)
        ours32 = _fmt(worst(variant["ours_float32_vs_reference_float64"][last]))
        floor = _fmt(worst(variant["float32_floor"][last]))
        settings = f" ({', '.join(result['overrides'])})" if result.get("overrides") else ""
        out.append(f"| {result['algo']} | {result['repo']} `{result['file']}` @ {commit} | "
                   f"{variant['variant']}{settings} | {' / '.join(at)} | {float64} | {ours32} (floor {floor}) |")
    return out


def table(results: list[dict]) -> str:
    lines = ["| algorithm | reference | variant | after updates | params, both float64 (rel. L2) | "
             "ours float32 vs reference float64, last update |", "|---|---|---|---|---|---|"]
    for result in results:
        lines += rows(result)
    notes = []
    for result in results:
        for found in result.get("differences_found", []):
            note = (f"- {result['algo']} against {result['reference']} ({found['where']}): {found['what']} "
                    f"**{found['fate']}**")
            if note not in notes:  # a reference compared twice (other updates or settings) lists its findings once
                notes.append(note)
    if notes:
        lines += ["", "Differences found and what became of each:", "", *notes]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
    args = [a for a in argv if not a.startswith("--out=")]
    out = next((a[len("--out="):] for a in argv if a.startswith("--out=")), None)
    folder = Path(args[0]) if args else DEFAULT_DIR
    files = sorted(folder.glob("*.json"))
    if not files:
        sys.exit(f"error: {folder} holds no parity results (*.json); run python -m benchmarks.parity first")
    text = table([json.loads(path.read_text()) for path in files])
    print(text, end="")
    if out:
        Path(out).write_text(text)


if __name__ == "__main__":
    main(sys.argv[1:])
