#!/usr/bin/env bash
# KV-cached greedy decoding of one GGUF, graft vs llama.cpp: 64 new tokens after a 256-token
# prompt (llama-bench: tg64 at depth 256), the same thread count, runs alternated, medians.
# llama.cpp from the llama-cpp-python sdist on PyPI (its vendored copy), e.g.:
#   pip download llama-cpp-python --no-deps --no-binary :all:   (or fetch the sdist URL)
#   tar xzf llama_cpp_python-*.tar.gz && cd llama_cpp_python-*/vendor/llama.cpp
#   cmake -B build -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DGGML_NATIVE=ON && cmake --build build -j --target llama-bench
# usage: bench/decode_llamacpp.sh MODEL.gguf LLAMA_BENCH [THREADS]
set -euo pipefail
model=${1:?model.gguf}
llama_bench=${2:?path to llama-bench}
threads=${3:-$(nproc)}
graft=${GRAFT:-target/release/graft}
g=(); q=(); l=()
for round in 1 2; do
  g+=("$(RAYON_NUM_THREADS=$threads $graft bench decode --model "$model" --seq-len 256 --new-tokens 64 --repeats 3 | python3 -c 'import json,sys; print(json.load(sys.stdin)["tokens_per_second_median"])')")
  q+=("$(RAYON_NUM_THREADS=$threads $graft bench decode --model "$model" --seq-len 256 --new-tokens 64 --repeats 3 --keep-quantized | python3 -c 'import json,sys; print(json.load(sys.stdin)["tokens_per_second_median"])')")
  l+=("$("$llama_bench" -m "$model" -t "$threads" -p 0 -n 64 -d 256 -r 3 -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["avg_ts"])')")
done
python3 - "${g[*]}" "${q[*]}" "${l[*]}" <<'PY'
import statistics, sys
g, q, l = ([float(x) for x in a.split()] for a in sys.argv[1:])
gm, qm, lm = statistics.median(g), statistics.median(q), statistics.median(l)
print(f"decode tg64 @ 256: graft f32 {gm:.1f} tok/s ({gm/lm:.2f}x), graft --keep-quantized {qm:.1f} tok/s ({qm/lm:.2f}x), llama.cpp {lm:.1f} tok/s")
PY
