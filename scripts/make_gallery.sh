#!/usr/bin/env bash
# Rebuilds the README gallery, docs/gallery/{scene,shapes}.png: `duet visualize` with the bundled trained
# model (synth-llava: its tower was trained to put CLS attention on objects, so stage 1 keeps object
# patches; stage 2 ranks by its decoder's attention from the question) on the example images, four
# profiles per figure. Run from anywhere, after `make setup` (or with DUET=/path/to/duet):
#   bash scripts/make_gallery.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
DUET=${DUET:-.venv/bin/duet}
PROFILES=(--profile visionzip-64 --profile duet-64 --profile duet-192 --profile pdrop-64)
SUFFIX=$'\nAnswer the question using a single word or phrase.'
mkdir -p docs/gallery
"$DUET" visualize --model synth-llava --image examples/scene.png \
    --question "What number is written on the purple circle?$SUFFIX" "${PROFILES[@]}" --device cpu \
    --dtype float32 --seed 0 --max-new-tokens 4 --patch-px 14 --out docs/gallery/scene.png >/dev/null
"$DUET" visualize --model synth-llava --image examples/shapes.png \
    --question "What color is the circle?$SUFFIX" "${PROFILES[@]}" --device cpu \
    --dtype float32 --seed 0 --max-new-tokens 4 --patch-px 14 --out docs/gallery/shapes.png >/dev/null
ls -l docs/gallery/*.png
