"""PyTorch (transformers, eager mode) side of `graft bench train`: the same random Llama shape, the
same token ids, the same step (forward, causal-LM loss, backward, clip 1.0, AdamW lr 1e-4 betas
(0.9, 0.95) wd 0.1), one warm-up then the median of N steps; peak RSS from getrusage.

usage: python bench/train_torch.py [--llama 512,8,1536,8192 --batch 4 --seq-len 256 --repeats 5]
"""
import argparse
import json
import os
import resource
import statistics
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

p = argparse.ArgumentParser()
p.add_argument("--llama", default="512,8,1536,8192")
p.add_argument("--batch", type=int, default=4)
p.add_argument("--seq-len", type=int, default=256)
p.add_argument("--repeats", type=int, default=5)
p.add_argument("--lora-r", type=int, default=0, help="LoRA rank on every linear layer (peft), 0 = full fine-tuning")
a = p.parse_args()
hidden, layers, inter, vocab = map(int, a.llama.split(","))

torch.set_num_threads(int(os.environ.get("BENCH_THREADS", os.cpu_count())))
torch.manual_seed(0)
cfg = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
                  num_attention_heads=8, num_key_value_heads=8, rms_norm_eps=1e-5, tie_word_embeddings=True)
model = LlamaForCausalLM(cfg).train()
if a.lora_r:
    from peft import LoraConfig, get_peft_model
    model = get_peft_model(model, LoraConfig(r=a.lora_r, lora_alpha=2 * a.lora_r, target_modules="all-linear"))
opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1)
n = a.batch * a.seq_len
ids = torch.tensor([((i * 2654435761) & 0xFFFFFFFFFFFFFFFF) % vocab for i in range(n)]).view(a.batch, a.seq_len)
rates = []
for run in range(a.repeats + 1):
    t0 = time.perf_counter()
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    if run > 0:
        rates.append(n / (time.perf_counter() - t0))
print(json.dumps({"bench": "lora" if a.lora_r else "train", "impl": "pytorch", "lora_r": a.lora_r, "torch": torch.__version__, "params": sum(p.numel() for p in model.parameters()),
                  "threads": torch.get_num_threads(), "tokens_per_second_median": statistics.median(rates), "runs": rates,
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
