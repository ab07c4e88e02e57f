#!/usr/bin/env bash
# The prepared GPU check as one command for a machine with a GPU (PyTorch, no Ray, no Optuna),
# run from the repository root; it finishes within 8 minutes (--budget-s 420):
#
#     bash bench/gpu_check.sh            # writes $OUT/gpu.jsonl (./gpu.jsonl without $OUT)
#
# Data: the embedded synthetic tiles, unless the real 493-tile sample (19 MB) was copied
# beforehand into the git-ignored local-data/ folder, which the device tool must then carry:
#
#     mkdir -p local-data && cp -r ../shared/data/forest-aerial-sample local-data/
#
# Extra arguments go to `python -m bench.gpu` (--help lists them).
set -euo pipefail
cd "$(dirname "$0")/.."
sample=local-data/forest-aerial-sample
if [ -f "$sample/meta_data.csv" ]; then
    set -- --data "$sample" "$@"
fi
# decoded tiles go to a scratch folder, not to $OUT (whose files travel back)
export FOREST_SEG_CACHE="${FOREST_SEG_CACHE:-$(mktemp -d)}"
exec python -m bench.gpu --device cuda --out "${OUT:-.}/gpu.jsonl" --budget-s 420 "$@"
