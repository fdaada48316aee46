"""Write the bundled model's score table into its model card from a `duet eval` run (no hand-typed numbers).

    python scripts/write_model_card.py --eval runs/bundled/eval --card models/synth-llava/README.md

The card's Markdown between `<!-- scores:start -->` and `<!-- scores:end -->` is replaced by one row per
profile of the eval's results.json: measured average visual tokens, accuracy on the `synth` test split
and per question type; then the stage-1 check (visionzip-64 against random-64). Everything else in the
card is left as written.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

START, END = "<!-- scores:start -->", "<!-- scores:end -->"
TYPES = ("read", "exist", "attribute", "relation", "count", "choice")


def table(results: dict) -> str:
    cells = [c for c in results["cells"] if c["benchmark"] == "synth"]
    if not cells:
        raise SystemExit("error: the eval has no synth results")
    counts = {c["count"] for c in cells}
    lines = [
        f"`synth` test split, {'/'.join(str(n) for n in sorted(counts))} questions per profile, greedy "
        "decoding, exact match (bf16 weights, float32 compute on CPU).",
        "",
        "| profile | avg visual tokens | accuracy (%) | " + " | ".join(TYPES) + " |",
        "|---|---:|---:|" + "---:|" * len(TYPES),
    ]
    for c in cells:
        m = c["metrics"]
        per_type = " | ".join(f"{100 * m[f'{t}/acc']:.1f}" if f"{t}/acc" in m else "-" for t in TYPES)
        lines.append(
            f"| `{c['profile']}` | {c['avg_visual_tokens']:.2f} | {100 * c['score']:.1f} | {per_type} |"
        )
    by_name = {c["profile"]: c for c in cells}
    if "visionzip-64" in by_name and "random-64" in by_name:
        vz, rnd = by_name["visionzip-64"]["score"], by_name["random-64"]["score"]
        lines += [
            "",
            f"Stage 1 is meaningful on this model: `visionzip-64` scores {100 * vz:.1f}% against "
            f"{100 * rnd:.1f}% for 64 random patches (`random-64`), {100 * (vz - rnd):+.1f} points.",
        ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--eval", type=Path, required=True, help="a duet eval --out folder (results.json)")
    parser.add_argument("--card", type=Path, required=True, help="the model card (README.md) to update")
    args = parser.parse_args()
    results_file = args.eval / "results.json"
    if not results_file.is_file():
        sys.exit(f"error: {results_file} not found (run duet eval with --out {args.eval})")
    card = args.card.read_text()
    if START not in card or END not in card:
        sys.exit(f"error: {args.card} has no {START} ... {END} section")
    head, rest = card.split(START, 1)
    _, tail = rest.split(END, 1)
    text = head + START + "\n" + table(json.loads(results_file.read_text())) + "\n" + END + tail
    args.card.write_text(text)
    print(f"wrote the score table of {results_file} into {args.card}")


if __name__ == "__main__":
    main()
