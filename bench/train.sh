#!/usr/bin/env bash
# graft vs PyTorch eager: full fine-tuning of the same ~30M random Llama (batch 4x256, f32), runs
# alternated, median tokens/s and peak RSS of each, and their ratios.
# usage: bench/train.sh [PYTHON] [LORA_R]   (PYTHON needs torch, transformers; peft for LORA_R > 0)
set -euo pipefail
py=${1:-python3}
lora=${2:-0}
graft=${GRAFT:-target/release/graft}
rows=()
for round in 1 2; do
  rows+=("$($graft bench train --repeats 4 --lora-r "$lora")")
  rows+=("$($py "$(dirname "$0")/train_torch.py" --repeats 4 --lora-r "$lora" 2>/dev/null | tail -1)")
done
printf '%s\n' "${rows[@]}"
$py - "${rows[@]}" <<'PY'
import json, statistics, sys
rows = [json.loads(r) for r in sys.argv[1:]]
g = [r for r in rows if r["impl"] == "graft"]; t = [r for r in rows if r["impl"] == "pytorch"]
gt = statistics.median(r["tokens_per_second_median"] for r in g); tt = statistics.median(r["tokens_per_second_median"] for r in t)
gm = max(r["peak_rss_mib"] for r in g); tm = max(r["peak_rss_mib"] for r in t)
print(f"{g[0]['bench']} ({g[0]['params']/1e6:.1f}M params): graft {gt:.0f} tok/s, pytorch {tt:.0f} tok/s, ratio {gt/tt:.2f}x; "
      f"peak RSS graft {gm:.0f} MiB, pytorch {tm:.0f} MiB, ratio {gm/tm:.2f}x")
PY
