#!/usr/bin/env bash
# Rebuilds the README gallery, docs/gallery/{shapes,grid}.png: `duet visualize` with the bundled offline
# model (tiny-llava, RANDOM weights: its stage-1 picks are real CLS-attention picks of an untrained tower,
# its stage-2 picks real attention of an untrained LLM) on the example images, four profiles per figure.
# Run from anywhere, after `make setup` (or with DUET=/path/to/duet):  bash scripts/make_gallery.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
DUET=${DUET:-.venv/bin/duet}
PROFILES=(--profile visionzip-64 --profile duet-64 --profile duet-192 --profile pdrop-64)
mkdir -p docs/gallery
for name in shapes grid; do
    "$DUET" visualize --model tiny-llava --image "examples/$name.png" --question "What is in the picture?" \
        "${PROFILES[@]}" --device cpu --dtype float32 --seed 0 --max-new-tokens 4 --patch-px 14 \
        --out "docs/gallery/$name.png" >/dev/null
done
ls -l docs/gallery/*.png
