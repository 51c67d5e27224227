#!/usr/bin/env python3
"""Build a small preference set (TRL conversational shape) from the bundled chat set.

Usage: python3 tools/data/make_preference_set.py   (from the repository root)

Reads  data/chat/quickstart.jsonl, data/chat/quickstart.eval.jsonl
Writes data/preference/quickstart.jsonl, data/preference/quickstart.eval.jsonl

Each chat row becomes {"prompt": [user], "chosen": [assistant: the correct answer],
"rejected": [assistant: a wrong answer]}. Wrong answers are made deterministically: numbers are
moved by 1-3, novel titles and authors swapped for others, quoted words for another word of the
same sentence, repeated sentences lose their last word. Rows with no way to build a wrong answer
are left out. Stdlib only, fixed seed; licensed with the repository (MIT OR Apache-2.0).
"""
import json
import os
import random
import re

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TITLES = ["Sense and Sensibility.", "Pride and Prejudice.", "Emma.", "Persuasion."]
SEED = 7


def wrong(question, answer, rng):
    m = re.fullmatch(r"(-?\d+)\.", answer)
    if m:
        n = int(m.group(1))
        return f"{n + rng.choice([-3, -2, -1, 1, 2, 3])}."
    if answer in TITLES:
        return rng.choice([t for t in TITLES if t != answer])
    if answer == "Jane Austen.":
        return rng.choice(["Charles Dickens.", "Charlotte Bronte.", "George Eliot."])
    m = re.fullmatch(r'"([^"]+)"\.', answer)
    q = re.search(r'"([^"]+)"', question)
    if m and q:
        words = [w.strip('.,;:!?') for w in q.group(1).split()]
        others = [w for w in words if w and w != m.group(1)]
        if others:
            return f'"{rng.choice(others)}".'
    words = answer.split()
    if len(words) > 2:
        return " ".join(words[:-1]) + "."
    return None


def convert(src, dst, rng):
    rows = 0
    with open(src) as f, open(dst, "w") as out:
        for line in f:
            msgs = json.loads(line)["messages"]
            user, assistant = msgs[0], msgs[1]
            bad = wrong(user["content"], assistant["content"], rng)
            if bad is None or bad == assistant["content"]:
                continue
            out.write(json.dumps({"prompt": [user], "chosen": [assistant],
                                  "rejected": [{"role": "assistant", "content": bad}]}) + "\n")
            rows += 1
    return rows


def main():
    rng = random.Random(SEED)
    for name in ["quickstart.jsonl", "quickstart.eval.jsonl"]:
        n = convert(os.path.join(ROOT, "data", "chat", name), os.path.join(ROOT, "data", "preference", name), rng)
        print(f"data/preference/{name}: {n} rows")


if __name__ == "__main__":
    main()
