#!/usr/bin/env python3
"""Developer check (never CI): lm-eval's own task files on a real model, graft vs lm-eval.

Runs each task of the fixture mirror (tests/fixtures/eval/mirror, lm-eval's unchanged YAMLs)
with lm-eval (HF backend, float32, CPU) and with `graft eval` on the same HF folder, and prints
per task: both metric values, whether every prompt is identical, the largest relative
difference of a log-likelihood, and whether generations are identical.

    tools/fixtures/fetch_real_models.sh /root/real_models
    target/release/graft convert /root/real_models/smollm2-135m-instruct.gguf /tmp/smollm2-hf
    /root/venv/bin/python tools/lm_eval_real_check.py /tmp/smollm2-hf
"""

import glob
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIX = REPO / "tests" / "fixtures" / "eval"
TASKS = [("arc_easy", 2), ("arc_challenge", 2), ("mmlu_anatomy", 2), ("hellaswag", 1),
         ("truthfulqa_mc2", 0), ("piqa", 1), ("sciq", 0), ("boolq", 1), ("lambada_openai", 0),
         ("commonsense_qa", 0), ("openbookqa", 0), ("winogrande", 2), ("gsm8k", 1)]


def main(model: str):
    lm_eval = Path(sys.executable).parent / "lm_eval"
    graft = REPO / "target" / "release" / "graft"
    for task, shots in TASKS:
        with tempfile.TemporaryDirectory() as tmp:
            env = dict(os.environ, HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1",
                       HF_DATASETS_CACHE=os.path.join(tmp, "cache"))
            subprocess.run([str(lm_eval), "run", "--model", "hf", "--model_args",
                            f"pretrained={model},dtype=float32", "--device", "cpu",
                            "--batch_size", "1", "--tasks", task, "--num_fewshot", str(shots),
                            "--log_samples", "--output_path", f"{tmp}/lm"],
                           cwd=FIX / "mirror", env=env, check=True, capture_output=True)
            subprocess.run([str(graft), "eval", "--model", model, "--include-path",
                            str(FIX / "lm_eval_tasks"), "--datasets-dir", str(FIX / "mirror"),
                            "--tasks", task, "--num-fewshot", str(shots), "--output",
                            f"{tmp}/graft"], check=True, capture_output=True)
            want = json.load(open(glob.glob(f"{tmp}/lm/**/results_*.json", recursive=True)[0]))
            got = json.load(open(f"{tmp}/graft/results.json"))
            w, g = want["results"][task], got["results"][task]
            metrics = {k: (w[k], g.get(k)) for k in w if "," in k and "stderr" not in k}
            ls = [json.loads(l) for l in open(glob.glob(f"{tmp}/lm/**/samples_{task}_*.jsonl",
                                                        recursive=True)[0])]
            gs = {(s["doc_id"], s["filter"]): s for s in map(json.loads, open(f"{tmp}/graft/samples_{task}.jsonl"))}
            same_prompts, same_text, worst = True, True, 0.0
            for a in ls:
                b = gs[(a["doc_id"], a["filter"])]
                for k, arg in a["arguments"].items():
                    same_prompts &= arg["arg_0"] == b["arguments"][k]["arg_0"]
                for x, y in zip(a["resps"], b["resps"]):
                    if isinstance(x[0], list):
                        worst = max(worst, abs(float(x[0][0]) - float(y[0][0])) / (1 + abs(float(x[0][0]))))
                    else:
                        same_text &= x == y
            print(f"{task} ({shots}-shot): {metrics}; prompts identical: {same_prompts}; "
                  f"generations identical: {same_text}; max rel log-likelihood diff: {worst:.1e}")


if __name__ == "__main__":
    main(sys.argv[1])
