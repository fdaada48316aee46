#!/usr/bin/env bash
# The engine invariants (pytest -m invariant) on one end of the supported transformers range.
#
#   scripts/check_range.sh oldest VERSION DIR   transformers==VERSION (no deps) in DIR, laid over the locked
#                                               .venv with PYTHONPATH; the lock must meet its requirements
#   scripts/check_range.sh latest [DIR]         a throwaway venv (default: a new temp folder) with the
#                                               newest releases the index offers of everything duet uses
#                                               (torch stays at the lock's local build); not part of CI
#
# Either way it ends with a one-screen summary: the versions that differ from constraints.txt and each
# distinct failure with its count. Exit status: pytest's.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
LOCK=constraints.txt
mode=${1:?usage: check_range.sh oldest VERSION DIR | latest [DIR]}
report=$(mktemp -d)/invariants.xml

case "$mode" in
oldest)
  version=${2:?transformers version}
  dir=${3:?overlay folder}
  py=.venv/bin/python
  if [ ! -f "$dir/transformers-$version.dist-info/METADATA" ]; then
    rm -rf "$dir"
    "$py" -m pip install -q --no-deps --target "$dir" "transformers==$version"
  fi
  # the overlay holds transformers alone: every one of its requirements must be met by the locked set
  "$py" scripts/range_report.py requirements "$dir/transformers-$version.dist-info/METADATA"
  export PYTHONPATH="$dir${PYTHONPATH:+:$PYTHONPATH}"
  ;;
latest)
  dir=${2:-$(mktemp -d)/venv}
  python3 -m venv "$dir"
  py=$dir/bin/python
  echo "throwaway venv: $dir"
  "$py" -m pip install -q --upgrade pip
  grep -E '^(torch|torchvision|triton|nvidia-|cuda-)' "$LOCK" > "$dir/torch-pins.txt"
  "$py" -m pip install -q -c "$dir/torch-pins.txt" torch torchvision
  "$py" -m pip install -q -c "$dir/torch-pins.txt" --upgrade --upgrade-strategy eager -e ".[dev]"
  # past duet's own upper bound on purpose: this is how a newer release gets tested before it is admitted
  "$py" -m pip install -q -c "$dir/torch-pins.txt" --upgrade transformers tokenizers accelerate huggingface-hub 2>&1 |
    grep -v "^ERROR: pip's dependency resolver\|requires transformers" || true
  ;;
*)
  echo "usage: check_range.sh oldest VERSION DIR | latest [DIR]" >&2
  exit 2
  ;;
esac

set +e
"$py" -m pytest -m invariant -p no:cacheprovider --tb=line --junitxml="$report"
status=$?
set -e
"$py" scripts/range_report.py summary "$report" "$LOCK" "$mode"
exit $status
