"""duet's offline `synth` benchmark as a local lmms-eval task folder: the records `duet eval -B synth`
reads (same split, seed and --limit), their PNG images, a task YAML and its utils.py, scored by synth's
own exact-match rule. `python -m duet_cli.integrations.synth_task FOLDER --limit 200`, then
`lmms-eval --model duet --include_path FOLDER --tasks duet_synth ...`. No lmms-eval import here.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image

TASK = "duet_synth"
METRIC = "accuracy"  # per record 100 or 0, averaged: synth's accuracy in percent, as `duet eval` reports it

_YAML = """\
# duet's synth benchmark ({count} records of split {split}, seed {seed}) as a local lmms-eval task,
# written by `python -m duet_cli.integrations.synth_task`; run it with
#   lmms-eval --model duet --model_args pretrained=...,profile=... --include_path {folder} --tasks {task}
# Its accuracy equals `duet eval -B synth --split {split} --limit {count}` on the same model and profile.
task: {task}
dataset_path: json
dataset_kwargs:
  data_files:
    {split}: {data}
test_split: {split}
output_type: generate_until
doc_to_visual: !function utils.doc_to_visual
doc_to_text: !function utils.doc_to_text
doc_to_target: answer
generation_kwargs:
  max_new_tokens: {max_new_tokens}
  temperature: 0
  do_sample: false
  num_beams: 1
  until: []
process_results: !function utils.process_results
metric_list:
  - metric: {metric}
    aggregation: mean
    higher_is_better: true
metadata:
  - version: 1
"""

_UTILS = '''\
"""lmms-eval functions of the duet_synth task (written by duet_cli.integrations.synth_task)."""

from pathlib import Path

from duet_cli.integrations import synth_task

HERE = Path(__file__).resolve().parent


def doc_to_visual(doc):
    return synth_task.doc_to_visual(doc, HERE)


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    return synth_task.doc_to_text(doc)


def process_results(doc, results):
    return synth_task.process_results(doc, results)
'''


def write_synth_task(
    folder: Path,
    *,
    split: str = "test",
    limit: int | None = None,
    seed: int = 0,
    max_new_tokens: int = 16,
) -> Path:
    """Write the task folder (YAML, utils.py, data/<split>.jsonl, images/); returns the YAML's path.

    The records are `SynthBenchmark(seed).load(split=split, limit=limit)`, the ones `duet eval` answers;
    `max_new_tokens` defaults to duet eval's --max-new-tokens."""
    from duet_cli.benchmarks.synth import SynthBenchmark

    folder = Path(folder).expanduser().resolve()
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "data").mkdir(exist_ok=True)
    rows, written = [], set()
    for rec in SynthBenchmark(seed).load(None, split, limit):
        image = f"images/{split}-{rec.meta['image_index']:06d}.png"
        if image not in written:  # consecutive records share an image
            picture = rec.images[0]
            assert isinstance(picture, Image.Image)  # synth renders in memory
            picture.save(folder / image)
            written.add(image)
        rows.append(
            {
                "id": rec.id,
                "question": rec.question,
                "answer": rec.answers[0],
                "type": rec.meta["type"],
                "choices": json.dumps(rec.meta.get("choices", [])),  # one column type for every row
                "image": image,
            }
        )
    data = folder / "data" / f"{split}.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    (folder / "utils.py").write_text(_UTILS, encoding="utf-8")
    yaml_path = folder / f"{TASK}.yaml"
    yaml_path.write_text(
        _YAML.format(
            count=len(rows),
            split=split,
            seed=seed,
            folder=folder,
            task=TASK,
            data=json.dumps(str(data)),
            max_new_tokens=max_new_tokens,
            metric=METRIC,
        ),
        encoding="utf-8",
    )
    return yaml_path


# -- the task's functions (utils.py calls these) --------------------------------------------------------


def doc_to_visual(doc: dict[str, Any], root: Path) -> list[Any]:
    from duet_cli.inputs.media import load_image

    return [load_image(root / doc["image"])]


def doc_to_text(doc: dict[str, Any]) -> str:
    return str(doc["question"])


def process_results(doc: dict[str, Any], results: Sequence[str]) -> dict[str, float]:
    """Synth's exact-match rule (option letters for choice questions), as `duet eval` scores it."""
    from duet_cli.benchmarks.base import Record
    from duet_cli.benchmarks.synth import is_correct

    choices = json.loads(doc["choices"])
    meta: dict[str, Any] = {"type": doc["type"], **({"choices": choices} if choices else {})}
    record = Record(doc["id"], doc["question"], [], [doc["answer"]], meta)
    return {METRIC: 100.0 if is_correct(record, results[0] if results else None) else 0.0}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m duet_cli.integrations.synth_task",
        description="Write duet's synth benchmark as a local lmms-eval task folder (task name duet_synth).",
    )
    parser.add_argument("folder", type=Path, help="where to write the task (created if missing)")
    parser.add_argument("--split", default="test", help="synth split: test (default), val or train")
    parser.add_argument("--limit", type=int, default=None, help="first N records, as duet eval --limit")
    parser.add_argument("--seed", type=int, default=0, help="synth seed (default 0)")
    parser.add_argument("--max-new-tokens", type=int, default=16, help="as duet eval (default 16)")
    args = parser.parse_args(argv)
    from duet_cli.errors import DuetError

    try:
        path = write_synth_task(
            args.folder,
            split=args.split,
            limit=args.limit,
            seed=args.seed,
            max_new_tokens=args.max_new_tokens,
        )
    except (DuetError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
