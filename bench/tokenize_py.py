"""HF `tokenizers` (Python) batch encode of a text file's paragraphs — the baseline for
`graft data tokenize` (bench/tokenize.sh). Prints one JSON line: MB/s, tokens."""
import json, sys, time
from tokenizers import Tokenizer

tok_path, text_path = sys.argv[1], sys.argv[2]
tok = Tokenizer.from_file(tok_path)
paras, cur = [], []
for line in open(text_path, encoding="utf8"):
    line = line.strip()
    if line:
        cur.append(line)
    elif cur:
        paras.append(" ".join(cur)); cur = []
if cur:
    paras.append(" ".join(cur))
nbytes = sum(len(p.encode("utf8")) for p in paras)
t = time.perf_counter()
enc = tok.encode_batch(paras, add_special_tokens=True)
secs = time.perf_counter() - t
print(json.dumps({"impl": "hf-tokenizers-python", "mb_per_second": nbytes / 1e6 / secs,
                  "tokens": sum(len(e.ids) for e in enc), "seconds": secs}))
