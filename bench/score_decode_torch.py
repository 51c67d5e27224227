"""PyTorch (transformers, eager, float32) side of `graft bench score|decode`: the same GGUF file,
dequantized by transformers' own GGUF loader, the same token ids, the same timing rules (one warm-up,
median of N runs, decode rate excludes the prefill). Run through bench/score_decode.sh.

usage: python bench/score_decode_torch.py KIND MODEL.gguf [--batch 4 --seq-len 256 --new-tokens 64 --repeats 5]
"""
import argparse
import json
import os
import statistics
import time

import torch
from transformers import AutoModelForCausalLM

p = argparse.ArgumentParser()
p.add_argument("kind", choices=["score", "decode"])
p.add_argument("model")
p.add_argument("--batch", type=int, default=4)
p.add_argument("--seq-len", type=int, default=256)
p.add_argument("--new-tokens", type=int, default=64)
p.add_argument("--repeats", type=int, default=5)
a = p.parse_args()

torch.set_num_threads(int(os.environ.get("BENCH_THREADS", os.cpu_count())))
model = AutoModelForCausalLM.from_pretrained(
    os.path.dirname(os.path.abspath(a.model)), gguf_file=os.path.basename(a.model), dtype=torch.float32,
    attn_implementation="eager")
model.eval()
vocab = model.config.vocab_size
# The ids graft bench uses: (i * 2654435761 mod 2^32) mod vocab.
ids = torch.tensor([((i * 2654435761) & 0xFFFFFFFF) % vocab for i in range(a.batch * a.seq_len)]).view(a.batch, a.seq_len)

rates = []
with torch.inference_mode():
    for run in range(a.repeats + 1):
        if a.kind == "score":
            t0 = time.perf_counter()
            torch.log_softmax(model(ids).logits.float(), -1)
            rate = a.batch * a.seq_len / (time.perf_counter() - t0)
        else:
            prompt = ids[:1]
            t0 = time.perf_counter()
            out = model(prompt, use_cache=True)
            past, tok = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)
            t1 = time.perf_counter()
            for _ in range(a.new_tokens):
                out = model(tok, past_key_values=past, use_cache=True)
                past, tok = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)
            rate = a.new_tokens / (time.perf_counter() - t1)
        if run > 0:
            rates.append(rate)
print(json.dumps({"bench": a.kind, "impl": "pytorch", "torch": torch.__version__, "threads": torch.get_num_threads(),
                  "tokens_per_second_median": statistics.median(rates), "runs": rates}))
