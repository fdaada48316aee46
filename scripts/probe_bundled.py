"""Image-only questions on synth test scenes, per profile: the bundled synth-llava's model-card probe.

For the first N synth test scenes it asks "What colors are in the image?" and "What shapes are in the
image?" (answers: what is present, in the fixed order of COLORS / SHAPES, as in training) and scores
exact matches of the whole list, greedy, float32, under each profile.

    OMP_NUM_THREADS=1 python scripts/probe_bundled.py --images 200 --out probe.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bundled_data import lists

from duet_cli import api
from duet_cli.benchmarks.synth import scene_for
from duet_cli.benchmarks.synth_scene import render
from duet_cli.engine.session import apply_profile
from duet_cli.profiles import load_profile

PROFILES = ("baseline", "duet-192", "duet-64", "visionzip-64", "random-64")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="synth-llava")
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    scenes = [scene_for("test", i) for i in range(args.images)]
    images = [render(s) for s in scenes]
    truth: dict[str, list[str]] = {}
    for scene in scenes:  # the questions and answers exactly as the recipe trained them
        for _, question, answer in lists(scene):
            truth.setdefault(question, []).append(answer)
    loaded = api.load_model(args.model, dtype="float32")
    scores: dict[str, dict[str, float]] = {}
    for name in PROFILES:
        with apply_profile(loaded.model, load_profile(name)) as session:
            for question, answers in truth.items():
                right = 0
                for b in range(0, len(images), 8):
                    prompts = [api.Prompt(question, [im]) for im in images[b : b + 8]]
                    result = api.run(loaded, session, prompts, max_new_tokens=12)
                    right += sum(a.strip() == t for a, t in zip(result.answers, answers[b : b + 8]))
                scores.setdefault(name, {})[question] = round(100 * right / len(images), 1)
        print(name, scores[name], flush=True)
    if args.out:
        doc = {"model": args.model, "images": args.images, "scores": scores}
        args.out.write_text(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
