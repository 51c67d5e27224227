#!/usr/bin/env bash
# Two graft builds and PyTorch eager, alternated in one run: full fine-tuning, LoRA r16 and DPO on
# the ~30M random Llama (as bench/train.sh); two rounds, medians. For "did this change regress?"
# (A = the previous build, B = this one) with PyTorch measured beside them for the ratio.
# usage: bench/train_ab.sh PYTHON GRAFT_A GRAFT_B   (PYTHON needs torch, transformers, peft)
set -euo pipefail
py=$1 a=$2 b=$3
dir=$(dirname "$0")
batch() { [ "$1" = dpo ] && echo 2 || echo 4; }
torch_args() { case $1 in lora) echo "--lora-r 16" ;; dpo) echo "--dpo" ;; esac; }
rows=()
for round in 1 2; do
  for kind in train lora dpo; do
    rows+=("$($a bench "$kind" --repeats 4 --batch "$(batch "$kind")" | sed 's/"impl": *"graft"/"impl":"A"/')")
    rows+=("$($b bench "$kind" --repeats 4 --batch "$(batch "$kind")" | sed 's/"impl": *"graft"/"impl":"B"/')")
    # shellcheck disable=SC2046
    rows+=("$($py "$dir/train_torch.py" --repeats 4 --batch "$(batch "$kind")" $(torch_args "$kind") 2>/dev/null | tail -1)")
  done
done
printf '%s\n' "${rows[@]}"
$py - "${rows[@]}" <<'PY'
import json, statistics, sys
rows = [json.loads(r) for r in sys.argv[1:]]
for bench in dict.fromkeys(r["bench"] for r in rows):
    of = lambda impl: [r for r in rows if r["impl"] == impl and r["bench"] == bench]
    med = lambda impl: statistics.median(r["tokens_per_second_median"] for r in of(impl))
    rss = lambda impl: max(r["peak_rss_mib"] for r in of(impl))
    a, b, t = med("A"), med("B"), med("pytorch")
    print(f"{bench}: A {a:.0f} tok/s, B {b:.0f} tok/s (B/A {b/a:.2f}x), pytorch {t:.0f} tok/s "
          f"(A {a/t:.2f}x, B {b/t:.2f}x); peak RSS A {rss('A'):.0f}, B {rss('B'):.0f}, pytorch {rss('pytorch'):.0f} MiB")
PY
