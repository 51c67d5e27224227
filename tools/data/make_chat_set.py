#!/usr/bin/env python3
"""Build graft's quickstart chat SFT set from the bundled pretraining text.

Usage: python3 tools/data/make_chat_set.py   (from the repository root)

Reads  data/pretrain/austen.txt
Writes data/chat/quickstart.jsonl       (train rows)
       data/chat/quickstart.eval.jsonl  (40 held-out rows, disjoint prompts)

Every row is TRL's conversational shape:
  {"messages": [{"role": "user", "content": ...},
                {"role": "assistant", "content": ...}]}

All answers are short and correct by construction: they are either computed
(arithmetic, comparisons, counting) or read off the corpus itself (phrases,
next/previous word, which novel a character appears in, with every character
name checked to occur in that novel and in no other bundled novel).
Deterministic: stdlib only, fixed seed, no dependence on dict/set order.
The generated content is licensed with the repository (MIT OR Apache-2.0).
"""
import json
import os
import random
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SRC = os.path.join(ROOT, "data", "pretrain", "austen.txt")
OUT_DIR = os.path.join(ROOT, "data", "chat")
SEED = 20240501
N_EVAL = 40

# Title line in austen.txt -> (display title, year of first publication).
BOOKS = [
    ("SENSE AND SENSIBILITY", "Sense and Sensibility", 1811),
    ("PRIDE AND PREJUDICE", "Pride and Prejudice", 1813),
    ("EMMA", "Emma", 1815),
    ("Persuasion", "Persuasion", 1818),
]
CHARACTERS = {
    "Sense and Sensibility": ["Elinor", "Marianne Dashwood", "Mrs. Dashwood", "Colonel Brandon",
                              "Edward Ferrars", "Willoughby", "Lucy Steele",
                              "Mrs. Jennings", "John Dashwood", "Sir John Middleton"],
    "Pride and Prejudice": ["Elizabeth Bennet", "Mr. Darcy", "Mr. Bingley", "Mr. Collins",
                            "Mr. Wickham", "Lydia", "Lady Catherine", "Mrs. Bennet",
                            "Charlotte Lucas", "Georgiana"],
    "Emma": ["Emma Woodhouse", "Mr. Knightley", "Harriet Smith", "Frank Churchill",
             "Jane Fairfax", "Mr. Elton", "Miss Bates", "Mr. Woodhouse", "Mrs. Weston",
             "Robert Martin"],
    "Persuasion": ["Anne Elliot", "Captain Wentworth", "Sir Walter", "Lady Russell",
                   "Louisa Musgrove", "Admiral Croft", "Mrs Clay", "Captain Benwick",
                   "Captain Harville", "Charles Musgrove", "Mrs Smith"],
}
NUM_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight",
             "nine", "ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen",
             "sixteen", "seventeen", "eighteen", "nineteen", "twenty"]


def row(user, assistant):
    return {"messages": [{"role": "user", "content": user},
                         {"role": "assistant", "content": assistant}]}


def split_books(text):
    paras = text.split("\n\n")
    starts = []
    for title, name, _ in BOOKS:
        idx = [i for i, p in enumerate(paras) if p.strip() == title]
        assert len(idx) == 1, "title %r not found exactly once" % title
        starts.append(idx[0])
    assert starts == sorted(starts)
    out = {}
    for k, (_, name, _) in enumerate(BOOKS):
        end = starts[k + 1] if k + 1 < len(BOOKS) else len(paras)
        out[name] = "\n\n".join(paras[starts[k]:end])
    return out


def short_sentences(text):
    """Plain narrative sentences of 4-9 words: letters, spaces, commas, one final period."""
    found = set()
    for para in text.split("\n\n"):
        if "\n" in para:  # verse
            continue
        pieces = []
        for piece in re.split(r"(?<=[.!?])\s+", para):
            # "Mr. Elton ..." must not be split after the abbreviation.
            if pieces and re.search(r"\b(Mr|Mrs|Dr|St|Col)\.$", pieces[-1]):
                pieces[-1] += " " + piece
            else:
                pieces.append(piece)
        for s in pieces:
            if re.fullmatch(r"[A-Z][A-Za-z ,']*[a-z]\.", s) and 4 <= len(s.split()) <= 9:
                found.add(s)
    return sorted(found)


def arithmetic(rng):
    rows = []
    for a in range(10):
        for b in range(10):
            if a + b <= 12:
                rows.append(row("What is %d plus %d?" % (a, b), "%d." % (a + b)))
            if a >= b:
                rows.append(row("What is %d minus %d?" % (a, b), "%d." % (a - b)))
    for a in range(2, 6):
        for b in range(2, 6):
            rows.append(row("What is %d times %d?" % (a, b), "%d." % (a * b)))
    for a in range(1, 10):
        for b in range(1, 10):
            if a + b <= 10 and a != b:
                rows.append(row("What is %s and %s together?" % (NUM_WORDS[a], NUM_WORDS[b]),
                                NUM_WORDS[a + b].capitalize() + "."))
    for a in range(1, 20):
        for b in range(1, 20):
            if a != b and abs(a - b) <= 6:
                rows.append(row("Which is larger, %d or %d?" % (a, b), "%d." % max(a, b)))
    return rng.sample(rows, 180)


def phrase_tasks(sentences, rng):
    rows = []
    picked = rng.sample(sentences, 240)
    for i, s in enumerate(picked):
        words = s.rstrip(".").split()
        kind = i % 5
        if kind == 0:
            rows.append(row("Repeat after me: %s" % s, s))
        elif kind in (1, 2):
            bare = [w.strip(",") for w in words]
            choices = [j for j in range(len(bare) - 1) if bare.count(bare[j]) == 1]
            j = rng.choice(choices)
            if kind == 1:
                rows.append(row('In the sentence "%s", which word comes after "%s"?' % (s, bare[j]),
                                '"%s".' % bare[j + 1]))
            else:
                rows.append(row('In the sentence "%s", which word comes before "%s"?' % (s, bare[j + 1]),
                                '"%s".' % bare[j]))
        elif kind == 3:
            n = len(words)
            rows.append(row('How many words are in the sentence "%s"?' % s,
                            NUM_WORDS[n].capitalize() + "."))
        else:
            first = words[0].strip(",")
            rows.append(row('What is the first word of the sentence "%s"?' % s, '"%s".' % first))
    return rows


def book_tasks(books):
    rows = []
    for title, name, year in BOOKS:
        rows.append(row("Who wrote %s?" % name, "Jane Austen."))
        rows.append(row("Who is the author of %s?" % name, "Jane Austen."))
        rows.append(row("When was %s first published?" % name, "In %d." % year))
    for name, chars in CHARACTERS.items():
        for c in chars:
            for other, text in books.items():
                n = len(re.findall(r"\b%s\b" % re.escape(c), text))
                assert (n > 0) == (other == name), (c, other, n)
            rows.append(row("Which novel is %s from?" % c, "%s." % name))
            rows.append(row("In which book by Jane Austen do we meet %s?" % c, "In %s." % name))
    return rows


def fixed_facts(books):
    """Single fixed facts: kept in the train split only."""
    rows = []
    rows.append(row("Name a novel by Jane Austen.", "Pride and Prejudice."))
    rows.append(row("How many novels by Jane Austen are in this collection?", "Four."))
    first = books["Pride and Prejudice"].split("\n\n")[3]
    s = re.split(r"(?<=\.)\s", first)[0]
    assert s.startswith("It is a truth universally acknowledged")
    rows.append(row("What is the first sentence of Pride and Prejudice?", s))
    rows.append(row("Finish the phrase: It is a truth universally", "acknowledged."))
    return rows


def manners():
    pairs = [
        ("Hello!", "Good day to you."),
        ("Good morning.", "Good morning to you."),
        ("Good evening.", "Good evening to you."),
        ("How do you do?", "Very well, I thank you."),
        ("Thank you.", "You are very welcome."),
        ("Thank you very much.", "It was a pleasure."),
        ("Goodbye.", "Goodbye, and good day."),
        ("Who are you?", "I am a small model, trained on the novels of Jane Austen."),
        ("What can you do?", "I can answer simple questions and repeat short sentences."),
        ("Are you a person?", "No, I am a small language model."),
    ]
    return [row(u, a) for u, a in pairs]


def main():
    with open(SRC, encoding="utf-8") as f:
        text = f.read()
    rng = random.Random(SEED)
    books = split_books(text)
    sentences = short_sentences(text)
    assert len(sentences) > 500, len(sentences)
    fixed_rows = fixed_facts(books) + manners()
    rows = arithmetic(rng) + phrase_tasks(sentences, rng) + book_tasks(books) + fixed_rows
    seen, uniq = set(), []
    for r in rows:
        key = r["messages"][0]["content"]
        if key not in seen:
            seen.add(key)
            uniq.append(r)
    rng.shuffle(uniq)
    # Greetings and the single fixed facts stay in train; eval draws from the rest.
    fixed = {r["messages"][0]["content"] for r in fixed_rows}
    evalable = [i for i, r in enumerate(uniq) if r["messages"][0]["content"] not in fixed]
    eval_idx = set(evalable[:N_EVAL])
    train = [r for i, r in enumerate(uniq) if i not in eval_idx]
    evals = [r for i, r in enumerate(uniq) if i in eval_idx]
    os.makedirs(OUT_DIR, exist_ok=True)
    for fname, rs in (("quickstart.jsonl", train), ("quickstart.eval.jsonl", evals)):
        path = os.path.join(OUT_DIR, fname)
        with open(path, "w", encoding="utf-8", newline="\n") as f:
            for r in rs:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
        print("%s: %d rows, %d bytes" % (os.path.relpath(path, ROOT), len(rs), os.path.getsize(path)))


if __name__ == "__main__":
    sys.exit(main())
