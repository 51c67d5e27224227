#!/usr/bin/env bash
# LoRA and QLoRA (NF4 + double quantization) on a real model, graft vs PyTorch + peft (+ bitsandbytes
# for NF4), the same fixed ids (batch 4x256), LoRA r=16 on every linear layer, f32 compute; runs
# alternated, median tokens/s and peak RSS of each, and their ratios.
# usage: bench/qlora.sh MODEL_DIR [PYTHON] [--checkpointing]   (e.g. graft convert smollm2-135m-instruct.gguf MODEL_DIR;
#        PYTHON needs torch, transformers, peft, bitsandbytes)
set -euo pipefail
model=$1
py=${2:-python3}
ck=${3:-}
graft=${GRAFT:-target/release/graft}
rows=()
for round in 1 2; do
  for nf4 in "" "--nf4"; do
    rows+=("$($graft bench train --model "$model" --lora-r 16 $nf4 $ck --repeats 3)")
    rows+=("$($py "$(dirname "$0")/train_torch.py" --model "$model" --lora-r 16 $nf4 $ck --repeats 3 2>/dev/null | tail -1)")
  done
done
printf '%s\n' "${rows[@]}"
$py - "${rows[@]}" <<'PY'
import json, statistics, sys
rows = [json.loads(r) for r in sys.argv[1:]]
for bench in ("lora", "qlora-nf4"):
    g = [r for r in rows if r["impl"] == "graft" and r["bench"] == bench]
    t = [r for r in rows if r["impl"] == "pytorch" and r["bench"] == bench]
    gt = statistics.median(r["tokens_per_second_median"] for r in g); tt = statistics.median(r["tokens_per_second_median"] for r in t)
    gm = max(r["peak_rss_mib"] for r in g); tm = max(r["peak_rss_mib"] for r in t)
    print(f"{bench} ({g[0]['params']/1e6:.0f}M params): graft {gt:.0f} tok/s, pytorch {tt:.0f} tok/s, ratio {gt/tt:.2f}x; "
          f"peak RSS graft {gm:.0f} MiB, pytorch {tm:.0f} MiB, ratio {gm/tm:.2f}x")
PY
