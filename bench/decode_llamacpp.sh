#!/usr/bin/env bash
# graft vs llama.cpp on one GGUF, the same thread count, runs alternated, medians of the rounds:
#   decode  = 64 new tokens after a 256-token prompt (llama-bench tg64 at depth 256; graft bench decode)
#   prefill = a 256-token prompt (llama-bench pp256; graft bench prefill: the prompt's forward pass
#             and the first token, as generation runs it)
# graft is measured with the weights kept quantized (its default for a GGUF: 8-bit activations
# while generating, as llama.cpp) and dequantized to f32 (--dequantize).
# llama.cpp from the llama-cpp-python sdist on PyPI (its vendored copy), e.g.:
#   pip download llama-cpp-python --no-deps --no-binary :all:   (or fetch the sdist URL)
#   tar xzf llama_cpp_python-*.tar.gz && cd llama_cpp_python-*/vendor/llama.cpp
#   cmake -B build -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DGGML_NATIVE=ON && cmake --build build -j --target llama-bench
# usage: bench/decode_llamacpp.sh MODEL.gguf LLAMA_BENCH [THREADS] [ROUNDS]
set -euo pipefail
model=${1:?model.gguf}
llama_bench=${2:?path to llama-bench}
threads=${3:-$(nproc)}
rounds=${4:-3}
graft=${GRAFT:-target/release/graft}
rate() { python3 -c 'import json,sys; print(json.load(sys.stdin)["tokens_per_second_median"])'; }
lrate() { python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["avg_ts"])'; }
gd=(); gq=(); ld=(); gp=(); gpq=(); lp=()
for round in $(seq "$rounds"); do
  gq+=("$(RAYON_NUM_THREADS=$threads $graft bench decode --model "$model" --seq-len 256 --new-tokens 64 --repeats 3 | rate)")
  gd+=("$(RAYON_NUM_THREADS=$threads $graft bench decode --model "$model" --seq-len 256 --new-tokens 64 --repeats 3 --dequantize | rate)")
  ld+=("$("$llama_bench" -m "$model" -t "$threads" -p 0 -n 64 -d 256 -r 3 -o json | lrate)")
  gpq+=("$(RAYON_NUM_THREADS=$threads $graft bench prefill --model "$model" --seq-len 256 --repeats 3 | rate)")
  gp+=("$(RAYON_NUM_THREADS=$threads $graft bench prefill --model "$model" --seq-len 256 --repeats 3 --dequantize | rate)")
  lp+=("$("$llama_bench" -m "$model" -t "$threads" -p 256 -n 0 -r 3 -o json | lrate)")
done
python3 - "$model" "${gq[*]}" "${gd[*]}" "${ld[*]}" "${gpq[*]}" "${gp[*]}" "${lp[*]}" <<'PY'
import statistics, sys
name = sys.argv[1]
gq, gd, ld, gpq, gp, lp = ([float(x) for x in a.split()] for a in sys.argv[2:])
m = statistics.median
for what, q, d, l in (("decode tg64 @ 256", gq, gd, ld), ("prefill pp256", gpq, gp, lp)):
    print(f"{name}: {what}: graft kept quantized {m(q):.1f} tok/s ({m(q)/m(l):.2f}x), "
          f"graft f32 {m(d):.1f} tok/s ({m(d)/m(l):.2f}x), llama.cpp {m(l):.1f} tok/s; "
          f"runs q={q} f32={d} llama.cpp={[round(x, 1) for x in l]}")
PY
