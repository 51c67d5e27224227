#!/usr/bin/env bash
# Seeds corpus/<target>/ from the test fixtures (run from fuzz/).
set -euo pipefail
cd "$(dirname "$0")"
F=../tests/fixtures
mkdir -p corpus/{gguf,safetensors,jsonl_rows,parquet_rows,token_cache,mergekit_yaml,lm_eval_yaml}
cp $F/models/*.gguf corpus/gguf/
{ cat $F/models/llama/config.json; printf '\xff\x00\xff'; cat $F/models/llama/model.safetensors; } > corpus/safetensors/llama
cp $F/data/chat.jsonl $F/eval/data/*.jsonl corpus/jsonl_rows/
cp $F/data/*.parquet corpus/parquet_rows/
cp $F/merge/configs/*.yml corpus/mergekit_yaml/
for t in tiny_mc tiny_gen tiny_ppl; do
  { sed 's#data/[a-z_]*_test.jsonl#test.jsonl#; s#data/[a-z_]*_train.jsonl#test.jsonl#' $F/eval/$t.yaml; printf '\xff\x00\xff'; cat $F/eval/data/${t}_test.jsonl; } > corpus/lm_eval_yaml/$t
done
printf '{"dtype":"u16","documents":2,"tokens":3,"vocab_size":300,"tokenizer":"t","source":"s"}\xff\x00\xff' > corpus/token_cache/two
printf '\x00\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x03\x00\x00\x00\x00\x00\x00\x00\xff\x00\xff\x01\x00\x02\x00\x03\x00' >> corpus/token_cache/two
echo "seeded $(find corpus -type f | wc -l) files"
