#!/usr/bin/env bash
# graft vs PyTorch eager on the same ~30M random Llama (f32): full fine-tuning and LoRA r16 (peft,
# every linear layer) on 4x256 tokens, DPO on 2 pairs of 256-token rows; runs alternated, median
# tokens/s and peak RSS of each, and their ratios. With GRAFT_B set, a second graft build runs in
# the same rotation (e.g. the previous main), so a change is judged side by side in one run.
# usage: [GRAFT=path] [GRAFT_B=path] bench/train.sh [PYTHON] [KIND...]   KIND: train, lora, dpo
#        (PYTHON needs torch, transformers; peft for lora)
set -euo pipefail
py=${1:-python3}
shift || true
kinds=("${@:-train lora dpo}")
read -ra kinds <<<"${kinds[*]}"
graft=${GRAFT:-target/release/graft}
graft_b=${GRAFT_B:-}
batch() { [ "$1" = dpo ] && echo 2 || echo 4; }
torch_args() {
  case $1 in
    lora) echo "--lora-r 16" ;;
    dpo) echo "--dpo" ;;
  esac
}
rows=()
for round in 1 2; do
  for kind in "${kinds[@]}"; do
    rows+=("$($graft bench "$kind" --repeats 4 --batch "$(batch "$kind")")")
    if [ -n "$graft_b" ]; then
      rows+=("$($graft_b bench "$kind" --repeats 4 --batch "$(batch "$kind")" | sed 's/"impl": *"graft"/"impl":"graft_b"/')")
    fi
    # shellcheck disable=SC2046
    rows+=("$($py "$(dirname "$0")/train_torch.py" --repeats 4 --batch "$(batch "$kind")" $(torch_args "$kind") 2>/dev/null | tail -1)")
  done
done
printf '%s\n' "${rows[@]}"
$py - "${rows[@]}" <<'PY'
import json, statistics, sys
rows = [json.loads(r) for r in sys.argv[1:]]
for bench in dict.fromkeys(r["bench"] for r in rows):
    of = lambda impl: [r for r in rows if r["impl"] == impl and r["bench"] == bench]
    g, t, b = of("graft"), of("pytorch"), of("graft_b")
    gt = statistics.median(r["tokens_per_second_median"] for r in g); tt = statistics.median(r["tokens_per_second_median"] for r in t)
    gm = max(r["peak_rss_mib"] for r in g); tm = max(r["peak_rss_mib"] for r in t)
    line = (f"{bench} ({g[0]['params']/1e6:.1f}M params, {g[0]['tokens']} tokens/step): graft {gt:.0f} tok/s, pytorch {tt:.0f} tok/s, "
            f"ratio {gt/tt:.2f}x; peak RSS graft {gm:.0f} MiB, pytorch {tm:.0f} MiB, ratio {gm/tm:.2f}x")
    if b:
        bt = statistics.median(r["tokens_per_second_median"] for r in b)
        line += f"; GRAFT_B {bt:.0f} tok/s ({bt/tt:.2f}x pytorch), graft/GRAFT_B {gt/bt:.2f}x, peak RSS {max(r['peak_rss_mib'] for r in b):.0f} MiB"
    print(line)
PY
