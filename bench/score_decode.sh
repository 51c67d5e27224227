#!/usr/bin/env bash
# graft vs PyTorch (transformers eager, f32) on one GGUF, alternating runs, same ids and timing rules.
# usage: bench/score_decode.sh MODEL.gguf [PYTHON]   (PYTHON needs torch, transformers, gguf)
# Prints each run's JSON and the median ratio graft / PyTorch per kind.
set -euo pipefail
model=${1:?model.gguf}
py=${2:-python3}
graft=${GRAFT:-target/release/graft}
for kind in score decode; do
  g=(); t=()
  for round in 1 2; do
    g+=("$($graft bench $kind --model "$model" --repeats 3)")
    t+=("$($py "$(dirname "$0")/score_decode_torch.py" $kind "$model" --repeats 3 2>/dev/null | tail -1)")
  done
  printf '%s\n' "${g[@]}" "${t[@]}"
  $py - "$kind" "${g[@]}" "${t[@]}" <<'PY'
import json, statistics, sys
kind, rows = sys.argv[1], [json.loads(r) for r in sys.argv[2:]]
g = statistics.median(r["tokens_per_second_median"] for r in rows[:len(rows)//2])
t = statistics.median(r["tokens_per_second_median"] for r in rows[len(rows)//2:])
print(f"{kind}: graft {g:.1f} tok/s, pytorch {t:.1f} tok/s, ratio {g/t:.2f}x")
PY
done
