"""PyTorch (transformers, eager mode) side of `graft bench train|dpo`: the same random Llama shape,
the same token ids, the same step (forward, causal-LM loss, backward, clip 1.0, AdamW lr 1e-4 betas
(0.9, 0.95) wd 0.1), one warm-up then the median of N steps; peak RSS from getrusage.

--dpo: --batch preference pairs, each chosen and rejected row of --seq-len tokens sharing the
first half (the prompt); TRL's DPO step — one concatenated policy forward of chosen and rejected,
summed response log-probs, sigmoid loss with beta 0.1 — against reference log-probs computed once
before the first step (TRL's precompute_ref_log_probs; graft caches them the same way).

usage: python bench/train_torch.py [--llama 512,8,1536,8192 | --model DIR [--nf4]] [--lora-r R]
       [--dpo] [--batch 4 --seq-len 256 --repeats 5]
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
p.add_argument("--model", help="an HF model dir instead of the random Llama")
p.add_argument("--nf4", action="store_true", help="with --model and --lora-r: the base in bitsandbytes NF4 + double quant (QLoRA)")
p.add_argument("--dpo", action="store_true", help="DPO on --batch preference pairs instead of the LM loss")
p.add_argument("--checkpointing", action="store_true", help="gradient checkpointing of every decoder layer")
a = p.parse_args()

torch.set_num_threads(int(os.environ.get("BENCH_THREADS", os.cpu_count())))
torch.manual_seed(0)
if a.model:
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig
    q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                           bnb_4bit_compute_dtype=torch.float32) if a.nf4 else None
    model = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float32, quantization_config=q, device_map="cpu").train()
    if a.nf4:
        from peft import prepare_model_for_kbit_training
        # QLoRA's preparation, without gradient checkpointing (graft has none either).
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    vocab = model.config.vocab_size
else:
    hidden, layers, inter, vocab = map(int, a.llama.split(","))
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
                      num_attention_heads=8, num_key_value_heads=8, rms_norm_eps=1e-5, tie_word_embeddings=True)
    model = LlamaForCausalLM(cfg).train()
if a.checkpointing:
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.config.use_cache = False
if a.lora_r:
    from peft import LoraConfig, get_peft_model
    model = get_peft_model(model, LoraConfig(r=a.lora_r, lora_alpha=2 * a.lora_r, target_modules="all-linear"))
opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1)
rows = 2 * a.batch if a.dpo else a.batch
n = rows * a.seq_len
# Row r's ids: a multiplicative hash of its token positions (as graft bench).
ids = torch.tensor([((i * 2654435761) & 0xFFFFFFFFFFFFFFFF) % vocab for i in range(n)]).view(rows, a.seq_len)
half = a.seq_len // 2
if a.dpo:
    ids[1::2, :half] = ids[0::2, :half]  # pair b: chosen row 2b, rejected row 2b+1, same prompt
    ids = torch.cat([ids[0::2], ids[1::2]])  # TRL's concatenated batch: chosen rows, then rejected


def response_logps(m):
    logits = m(input_ids=ids).logits[:, half - 1:-1]
    return torch.gather(logits.log_softmax(-1), 2, ids[:, half:, None]).squeeze(2).sum(-1)


if a.dpo:
    with torch.no_grad():
        ref = response_logps(model)
rates = []
for run in range(a.repeats + 1):
    t0 = time.perf_counter()
    if a.dpo:
        pol = response_logps(model)
        margin = (pol[:a.batch] - ref[:a.batch]) - (pol[a.batch:] - ref[a.batch:])
        loss = -torch.nn.functional.logsigmoid(0.1 * margin).mean()
    else:
        loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    if run > 0:
        rates.append(n / (time.perf_counter() - t0))
kind = "dpo" if a.dpo else "train"
print(json.dumps({"bench": "qlora-nf4" if a.nf4 else f"{kind}-lora" if a.dpo and a.lora_r else "lora" if a.lora_r else kind, "impl": "pytorch", "tokens": n, "checkpointing": a.checkpointing, "lora_r": a.lora_r, "torch": torch.__version__, "params": sum(p.numel() for p in model.parameters()),
                  "threads": torch.get_num_threads(), "tokens_per_second_median": statistics.median(rates), "runs": rates,
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
