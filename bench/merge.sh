#!/usr/bin/env bash
# graft merge vs mergekit-yaml on the same two HF checkpoints (e.g. SmolLM2-135M converted by
# `graft convert`, and a perturbed copy): linear, slerp and ties, alternated, wall seconds and peak
# RSS of each, and their ratios.
# usage: bench/merge.sh MODEL_A MODEL_B MERGEKIT_PYTHON_BIN_DIR   (the folder holding mergekit-yaml)
set -euo pipefail
a=$(realpath "$1"); b=$(realpath "$2"); mk=$3
graft=$(realpath "${GRAFT:-target/release/graft}")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cat > "$work/linear.yml" <<YML
models: [{model: $a, parameters: {weight: 0.5}}, {model: $b, parameters: {weight: 0.5}}]
merge_method: linear
dtype: float32
YML
cat > "$work/slerp.yml" <<YML
models: [{model: $a}, {model: $b}]
merge_method: slerp
base_model: $a
parameters: {t: [{filter: self_attn, value: [0, 0.5, 0.3, 0.7, 1]}, {filter: mlp, value: [1, 0.5, 0.7, 0.3, 0]}, {value: 0.5}]}
dtype: float32
YML
cat > "$work/ties.yml" <<YML
models: [{model: $b, parameters: {weight: 1.0, density: 0.5}}]
merge_method: ties
base_model: $a
dtype: float32
YML
measure() { # impl method -> "seconds rss_mib"
  local out="$work/out-$1-$2"; rm -rf "$out"
  if [ "$1" = graft ]; then cmd=("$graft" merge "$work/$2.yml" --out "$out")
  else cmd=("$mk/mergekit-yaml" "$work/$2.yml" "$out" --no-write-model-card --lazy-unpickle); fi
  /usr/bin/time -f "%e %M" -o "$work/time" "${cmd[@]}" > /dev/null 2>&1
  read -r s k < "$work/time"; echo "$s $((k / 1024))"; rm -rf "$out"
}
for m in linear slerp ties; do
  gs=(); gm=(); ks=(); km=()
  for round in 1 2; do
    read -r s r < <(measure graft $m); gs+=("$s"); gm+=("$r")
    read -r s r < <(measure mergekit $m); ks+=("$s"); km+=("$r")
  done
  python3 - "$m" "${gs[*]}" "${gm[*]}" "${ks[*]}" "${km[*]}" <<'PY'
import statistics, sys
m, gs, gm, ks, km = sys.argv[1], *[list(map(float, x.split())) for x in sys.argv[2:]]
g, k = statistics.median(gs), statistics.median(ks)
print(f"{m}: graft {g:.1f}s (runs {gs}), mergekit {k:.1f}s (runs {ks}), ratio {k/g:.2f}x faster; "
      f"peak RSS graft {max(gm):.0f} MiB, mergekit {max(km):.0f} MiB")
PY
done
