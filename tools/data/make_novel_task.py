#!/usr/bin/env python3
"""A small seq2seq classification task from the bundled Austen text: which novel is a passage from?

    python3 tools/data/make_novel_task.py      # no dependencies beyond the standard library

Reads data/pretrain/austen.txt (four public-domain novels, see data/README.md), splits it at the
title lines into Sense and Sensibility, Pride and Prejudice, Emma and Persuasion, keeps paragraphs
of at least 200 characters, cuts each to its first 300 characters (at a word boundary) and writes
    data/seq2seq/austen_novels.train.jsonl   {"inputs": "novel: <passage>", "targets": "<title>"}
    data/seq2seq/austen_novels.eval.jsonl
Every 8th kept paragraph of a novel goes to eval (at most 50 per novel), the others to train (at
most 300 per novel); rows are interleaved novel by novel. Deterministic: no randomness.
The eval passages are part of austen.txt, so span-corruption pretraining on that file sees them
as unlabelled text (never with their titles).
"""

import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TITLES = [("SENSE AND SENSIBILITY", "Sense and Sensibility"), ("PRIDE AND PREJUDICE", "Pride and Prejudice"),
          ("EMMA", "Emma"), ("Persuasion", "Persuasion")]


def cut(text, n=300):
    if len(text) <= n:
        return text
    return text[:n].rsplit(" ", 1)[0]


def main():
    lines = (REPO / "data" / "pretrain" / "austen.txt").read_text().split("\n")
    starts = [next(i for i, l in enumerate(lines) if l.strip() == head) for head, _ in TITLES]
    train, evals = [], []
    for k, (_, title) in enumerate(TITLES):
        end = starts[k + 1] if k + 1 < len(starts) else len(lines)
        paras = [p.strip() for p in "\n".join(lines[starts[k]:end]).split("\n\n")]
        kept = [p for p in paras if len(p) >= 200]
        tr = [p for i, p in enumerate(kept) if i % 8 != 7][:300]
        ev = [p for i, p in enumerate(kept) if i % 8 == 7][:50]
        train.append([{"inputs": "novel: " + cut(p), "targets": title} for p in tr])
        evals.append([{"inputs": "novel: " + cut(p), "targets": title} for p in ev])
        print(f"{title}: {len(kept)} paragraphs >= 200 chars; train {len(tr)}, eval {len(ev)}")
    out = REPO / "data" / "seq2seq"
    out.mkdir(parents=True, exist_ok=True)
    for name, groups in [("train", train), ("eval", evals)]:
        rows = [r for batch in zip(*groups) for r in batch]
        (out / f"austen_novels.{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        print(name, len(rows), "rows")


if __name__ == "__main__":
    main()
