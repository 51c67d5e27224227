#!/usr/bin/env bash
# graft data tokenize (tokenize + write the token cache) vs HF tokenizers' Python encode_batch on
# the same paragraphs, same tokenizer.json, alternated twice.
# usage: bench/tokenize.sh MODEL_DIR TEXT_FILE [PYTHON]   (PYTHON needs `tokenizers`)
set -euo pipefail
model=$1; text=$2; py=${3:-python3}
graft=${GRAFT:-target/release/graft}
out=$(mktemp -d)
for round in 1 2; do
  rm -rf "$out/cache"
  $graft data tokenize --model "$model" --input "$text" --output "$out/cache" | tail -1
  $py "$(dirname "$0")/tokenize_py.py" "$model/tokenizer.json" "$text"
done
rm -rf "$out"
