#!/usr/bin/env python3
"""Turn the raw novel texts extracted from Debian's r-cran-janeaustenr package
into graft's bundled pretraining corpus.

Usage: clean_austen.py RAW_DIR OUT_DIR

RAW_DIR holds one UTF-8 file per novel, one element of the R character vector
per line (as written by rdata_extract.py).  Writes OUT_DIR/austen.txt (train)
and OUT_DIR/austen.eval.txt (the final paragraphs, about 50 KB, held out).

Cleaning (deterministic, stdlib only):
  * LF line endings, Unicode NFC, trailing whitespace removed;
  * the editors' bracketed notes about volume breaks of early editions dropped;
  * hard-wrapped lines rejoined so that each paragraph is one line, with
    paragraphs separated by exactly one blank line; runs of spaces collapsed;
  * verse (indented blocks with alternating indentation) keeps its line breaks;
  * `_underscore_` italics markers removed;
  * section-break rows of asterisks normalised to "* * *".
"""
import os
import re
import sys
import unicodedata

# Publication order; the eval split is cut from the end of the last novel.
BOOKS = ["sensesensibility", "prideprejudice", "emma", "persuasion"]
EVAL_BYTES = 50_000

EDITORIAL = re.compile(r"^\[At this point in the .* editions?, Volume .* end(s|ed)\.\]$")
SECTION_BREAK = re.compile(r"^[\s*]*\*[\s*]*$")


def paragraphs(text):
    text = unicodedata.normalize("NFC", text.replace("\r\n", "\n").replace("\r", "\n"))
    blocks, cur = [], []
    for line in text.split("\n"):
        line = line.rstrip()
        if EDITORIAL.match(line.strip()):
            line = ""
        if line:
            cur.append(line)
        elif cur:
            blocks.append(cur)
            cur = []
    if cur:
        blocks.append(cur)
    for lines in blocks:
        if all(SECTION_BREAK.match(l) for l in lines):
            yield "* * *"
            continue
        indents = {len(l) - len(l.lstrip(" ")) for l in lines}
        verse = len(lines) > 1 and 0 not in indents and len(indents) > 1
        parts = [re.sub(r"\s+", " ", l.strip()).replace("_", "") for l in lines]
        yield ("\n" if verse else " ").join(parts)


def main():
    raw_dir, out_dir = sys.argv[1], sys.argv[2]
    paras = []
    for name in BOOKS:
        with open(os.path.join(raw_dir, name + ".txt"), encoding="utf-8") as f:
            paras.extend(paragraphs(f.read()))
    # Hold out whole paragraphs from the very end, at least EVAL_BYTES of them.
    n, size = len(paras), 0
    while size < EVAL_BYTES:
        n -= 1
        size += len(paras[n].encode("utf-8")) + 2
    os.makedirs(out_dir, exist_ok=True)
    for fname, chunk in (("austen.txt", paras[:n]), ("austen.eval.txt", paras[n:])):
        with open(os.path.join(out_dir, fname), "w", encoding="utf-8", newline="\n") as f:
            f.write("\n\n".join(chunk) + "\n")
        print("%s: %d paragraphs, %d bytes" % (fname, len(chunk),
              os.path.getsize(os.path.join(out_dir, fname))))


if __name__ == "__main__":
    main()
