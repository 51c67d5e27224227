#!/usr/bin/env python3
"""Turn a tree of roff man pages into a JSONL corpus of plain-prose paragraphs.

Used by fetch_italian_text.sh on Debian's manpages-it, but nothing here is
Italian-specific.  Python 3 standard library only.

    roff_to_text.py MAN_DIR OUT_DIR [--prefix it] [--eval-frac 0.1] [--seed 1234]
                    [--min-words 8]

What it does, per man page (plain or .gz; symlinks and ".so" redirects skipped):
  * drops comments (.\\" and \\"), macro definitions (.de/.am/.ig), conditionals
    (.if/.ie/.el, including \\{ ... \\} blocks), tables and preprocessor blocks
    (.TS/.TE, .EQ/.EN, .PS/.PE), no-fill and example blocks (.nf/.fi, .EX/.EE,
    pod2man's .Vb/.Ve, mdoc's .Bd -literal/.Ed), index entries (.IX) and the
    sections NAME, SYNOPSIS, SEE ALSO and TRADUZIONE (translator credits);
  * keeps the text arguments of inline font macros (.B .I .SM .SB .BR .IR .RB
    .RI .BI .IB, bash's .FN, zdump's .q, .URL, .UR/.UE, .MT/.ME) and of the
    inline mdoc macros (.Nm .Ar .Fl .Xr .Pa .Tn .Op .Aq ...);
  * unescapes \\- \\(em \\[aq] \\fB \\fI \\fR \\fP \\e \\& \\*(lq ... into plain text;
  * joins filled lines into paragraphs, breaking at blank lines and at
    .PP/.LP/.P/.SH/.SS/.TP/.IP/.HP/.sp/.br/.RS/.RE (and mdoc .Sh/.Pp/.It/.Bl/.El);
    a .TP/.It tag becomes its own (short, hence filtered) paragraph.
Then, over the whole corpus: paragraphs with fewer than --min-words words are
dropped, so are paragraphs that do not look Italian (a function-word count: this
drops the strings the translators left in English, and command lines), and exact
duplicates are dropped (first occurrence wins, pages in sorted
order), and pages are split into train/eval by page: pages are visited in the
order of sha256(relative page name) and put into eval while that keeps eval at or
under --eval-frac of all paragraphs, so a page is wholly train or wholly eval.
Each split is shuffled with random.Random(seed) and written as
OUT_DIR/{prefix}_train.jsonl and OUT_DIR/{prefix}_eval.jsonl, one {"text": ...}
per line (UTF-8, not ASCII-escaped).
"""
import argparse
import gzip
import hashlib
import json
import os
import random
import re
import sys

# ----------------------------------------------------------------- glyphs
GLYPHS = {
    "em": "\u2014", "en": "\u2013", "hy": "-", "mi": "-", "aq": "'", "dq": '"',
    "lq": "\u201c", "rq": "\u201d", "oq": "\u2018", "cq": "\u2019", "Fo": "\u00ab",
    "Fc": "\u00bb", "fo": "\u2039", "fc": "\u203a", "bu": "\u2022", "co": "\u00a9",
    "rg": "\u00ae", "tm": "\u2122", "de": "\u00b0", "dg": "\u2020", "ga": "`",
    "ha": "^", "ti": "~", "sl": "/", "rs": "\\", "ba": "|", "bv": "|", "br": "|",
    "ul": "_", "ru": "_", "pl": "+", "mu": "\u00d7", "di": "\u00f7", "+-": "\u00b1",
    ">=": "\u2265", "<=": "\u2264", "!=": "\u2260", "==": "\u2261", "->": "\u2192",
    "<-": "\u2190", "ra": "\u27e9", "la": "\u27e8", "pd": "\u2202", "if": "\u221e",
    "sq": "\u25a1", "ps": "\u00b6", "sc": "\u00a7", "ct": "\u00a2", "Eu": "\u20ac",
    "eu": "\u20ac", "Po": "\u00a3", "Ye": "\u00a5", "ss": "\u00df", "^o": "\u00f4",
    "*W": "\u03a9", "*p": "\u03c0", "*b": "\u03b2", "*a": "\u03b1", "*m": "\u03bc",
    "*l": "\u03bb", "*s": "\u03c3", "*S": "\u03a3", "*D": "\u0394", "12": "\u00bd",
    "14": "\u00bc", "34": "\u00be", "OK": "\u2713", "at": "@", "sh": "#", "Do": "$",
    "en": "\u2013", "lB": "[", "rB": "]", "lC": "{", "rC": "}", "la": "\u27e8",
}
# composite accents \[`a] \['e] \[:u] \[^o] \[~n] \[,c]
ACCENTS = {"`": "\u0300", "'": "\u0301", "^": "\u0302", "~": "\u0303", ":": "\u0308",
           ",": "\u0327"}
# predefined strings (\*x, \*(xx); the nroff meaning, as man/pod2man define them
STRINGS = {
    "lq": "\u201c", "rq": "\u201d", "C`": '"', "C'": '"', 'L"': "\u201c",
    'R"': "\u201d", "--": "\u2014", "-": "-", "PI": "\u03c0", "Tm": "\u2122",
    "R": "\u00ae", "C+": "C++", "Aq": "'", "S": "", "dg": "", "]X": "", "]B": "",
}
GLUE = "\x00"  # marks "no space before the next text" (\c, punctuation after .UE etc.)


def glyph_bracket(name):
    if name in GLYPHS:
        return GLYPHS[name]
    m = re.fullmatch(r"u([0-9A-Fa-f]{4,6})(?:_([0-9A-Fa-f]{4,6}))*", name)
    if m:
        try:
            return "".join(chr(int(p[1:] if p.startswith("u") else p, 16))
                           for p in name.split("_"))
        except ValueError:
            return ""
    if len(name) == 2 and name[0] in ACCENTS and name[1].isalpha():
        import unicodedata
        return unicodedata.normalize("NFC", name[1] + ACCENTS[name[0]])
    return ""


def read_delimited(s, i):
    """s[i] is a delimiter character; return the index just past the closing one."""
    if i >= len(s):
        return i
    d = s[i]
    j = s.find(d, i + 1)
    return len(s) if j < 0 else j + 1


def read_name(s, i):
    """Escape-name syntax at s[i]: (xx, [name], or one character. -> (name, next_i)."""
    if i >= len(s):
        return "", i
    if s[i] == "(":
        return s[i + 1:i + 3], i + 3
    if s[i] == "[":
        j = s.find("]", i + 1)
        if j < 0:
            return s[i + 1:], len(s)
        return s[i + 1:j], j + 1
    return s[i], i + 1


def strip_comment(line):
    """Remove a \\" or \\# comment, honouring \\\\ (an escaped backslash)."""
    i = 0
    n = len(line)
    while i < n:
        if line[i] == "\\" and i + 1 < n:
            if line[i + 1] in '"#':
                return line[:i]
            i += 2
            continue
        i += 1
    return line


def unescape(s):
    out = []
    i = 0
    n = len(s)
    while i < n:
        c = s[i]
        if c != "\\":
            out.append(c)
            i += 1
            continue
        if i + 1 >= n:          # trailing backslash: line continuation
            break
        d = s[i + 1]
        i += 2
        if d == "f" or d == "F":                # font / family change
            _, i = read_name(s, i)
        elif d == "(":
            out.append(GLYPHS.get(s[i:i + 2], ""))
            i += 2
        elif d == "[":
            j = s.find("]", i)
            j = n if j < 0 else j
            out.append(glyph_bracket(s[i:j]))
            i = j + 1
        elif d == "C":                          # \C'name'
            j = read_delimited(s, i)
            out.append(glyph_bracket(s[i + 1:j - 1]))
            i = j
        elif d == "*":                          # predefined string
            if s[i:i + 2] == "\\-":            # zdump writes \*\- for \*-
                out.append("-")
                i += 2
            else:
                name, i = read_name(s, i)
                out.append(STRINGS.get(name, ""))
        elif d in "e\\E":
            out.append("\\")
        elif d == "-":
            out.append("-")
        elif d in "&|^%:){}!?$jpr":
            if d == "$":                        # macro argument reference \$1
                i += 1
            elif d == "?":
                j = s.find("\\?", i)
                i = n if j < 0 else j + 2
        elif d in " ~0_t":
            out.append(" ")
        elif d == "c":
            out.append(GLUE)
        elif d in "nmgMYVAB":                   # registers, colours, ...
            if d == "n" and i < n and s[i] in "+-":
                i += 1
            if d in "AB":                       # \A'..' \B'..'
                i = read_delimited(s, i)
            else:
                _, i = read_name(s, i)
        elif d == "s":                          # size change \s-1 \s+2 \s0 \s(12 \s[..] \s'..'
            m = re.match(r"[+-]?(\(\d\d|\[[^\]]*\]|'[^']*'|\d\d?)", s[i:])
            if m:
                i += m.end()
            elif i < n and s[i] in "+-":
                i += 1
        elif d in "hvwoxXlLbDNRZSHoO":          # delimited-argument escapes
            if d == "O" and i < n and s[i].isdigit():
                i += 1
            else:
                i = read_delimited(s, i)
        elif d == "k":
            _, i = read_name(s, i)
        elif d == "z":
            pass                                # zero-width next char: keep the char
        elif d == "'":
            out.append("'")
        elif d == "`":
            out.append("`")
        elif d in '"#':                         # comment
            break
        else:                                   # \. \, and anything else: the char itself
            out.append(d)
    return "".join(out)


def split_args(s):
    """roff request argument splitting: spaces separate, "..." groups, "" is a quote."""
    args = []
    i = 0
    n = len(s)
    while i < n:
        while i < n and s[i] in " \t":
            i += 1
        if i >= n:
            break
        if s[i] == '"':
            i += 1
            buf = []
            while i < n:
                if s[i] == '"':
                    if i + 1 < n and s[i + 1] == '"':
                        buf.append('"')
                        i += 2
                        continue
                    i += 1
                    break
                if s[i] == "\\" and i + 1 < n:
                    buf.append(s[i:i + 2])
                    i += 2
                    continue
                buf.append(s[i])
                i += 1
            args.append("".join(buf))
        else:
            buf = []
            while i < n and s[i] not in " \t":
                if s[i] == "\\" and i + 1 < n:
                    buf.append(s[i:i + 2])
                    i += 2
                    continue
                buf.append(s[i])
                i += 1
            args.append("".join(buf))
    return args


# ----------------------------------------------------------------- mdoc inline
MDOC_CALLABLE = set(
    "Ad An Ar Cd Cm Dv Er Ev Fa Fl Fn Ft Ic Li Nm Pa Sy Tn Va Em Ms Ot Sx Vt Mt Lk "
    "Op Aq Bq Brq Dq Pq Qq Sq Ql No Ns Xr Bx At Ux Fx Nx Ox Bsx Dx Pf Ap St Oo Oc".split())
MDOC_CLOSE_PUNCT = set(". , ; : ) ] ? !".split())
MDOC_WRAP = {"Op": ("[", "]"), "Aq": ("\u27e8", "\u27e9"), "Bq": ("[", "]"),
             "Brq": ("{", "}"), "Dq": ("\u201c", "\u201d"), "Pq": ("(", ")"),
             "Qq": ('"', '"'), "Sq": ("\u2018", "\u2019")}


def mdoc_inline(macro, args, page_name):
    """Flatten one mdoc line (macro + its arguments) to text."""
    out = []          # list of (text, glue_before)

    def emit(text, glue=False):
        out.append((text, glue))

    def run(macro, args):
        i = 0
        glue_next = False
        if macro == "Nm" and not args:
            emit(page_name)
        elif macro == "Xr" and args:
            name = unescape(args[0])
            sec = args[1] if len(args) > 1 and args[1] not in MDOC_CLOSE_PUNCT else ""
            emit(f"{name}({unescape(sec)})" if sec else name)
            i = 2 if sec else 1
        elif macro in ("Bx", "Ux"):
            if args and args[0] not in MDOC_CLOSE_PUNCT:
                emit(unescape(args[0]) + "BSD")
                i = 1
            else:
                emit("BSD" if macro == "Bx" else "UNIX")
        elif macro == "At":
            emit("AT&T UNIX")
        elif macro == "Lk" and args:
            emit(unescape(args[1]) if len(args) > 1 else unescape(args[0]))
            i = len(args)
            rest = [a for a in args[2:]]
            for a in rest:
                emit(unescape(a))
            return
        elif macro in MDOC_WRAP:
            op, cl = MDOC_WRAP[macro]
            # the wrapped part ends before trailing closing punctuation
            end = len(args)
            while end > 0 and args[end - 1] in MDOC_CLOSE_PUNCT:
                end -= 1
            inner_start = len(out)
            run_tokens(args[:end])
            if len(out) > inner_start:
                t, g = out[inner_start]
                out[inner_start] = (op + t, g)
                t, g = out[-1]
                out[-1] = (t + cl, g)
            else:
                emit(op + cl)
            for a in args[end:]:
                emit(unescape(a), True)
            return
        elif macro == "Fl":
            if args and args[0] not in MDOC_CALLABLE and args[0] not in MDOC_CLOSE_PUNCT:
                emit("-" + unescape(args[0]))
                i = 1
            else:
                emit("-")
                glue_next = True
        run_tokens(args[i:], glue_next)

    def run_tokens(toks, glue_next=False):
        i = 0
        while i < len(toks):
            t = toks[i]
            if t in MDOC_CALLABLE:
                # the callee takes the rest of the line
                start = len(out)
                if t == "Ns":
                    glue_next = True
                    i += 1
                    continue
                if t == "Pf":
                    if i + 1 < len(toks):
                        emit(unescape(toks[i + 1]), glue_next)
                        glue_next = True
                    i += 2
                    continue
                if t == "Ap":
                    emit("'", True)
                    glue_next = True
                    i += 1
                    continue
                run(t, toks[i + 1:])
                if glue_next and len(out) > start:
                    out[start] = (out[start][0], True)
                return
            if t in MDOC_CLOSE_PUNCT:
                emit(t, True)
            elif t in ("(", "["):
                emit(t, glue_next)
                glue_next = True
                i += 1
                continue
            else:
                emit(unescape(t), glue_next)
            glue_next = False
            i += 1

    run(macro, args)
    text = ""
    for t, g in out:
        if not t:
            continue
        text = text + t if (g or not text) else text + " " + t
    return text


# ----------------------------------------------------------------- the converter
BREAK_REQUESTS = set("PP LP P Pp Sp sp br RS RE SH SS Sh Ss TP TQ IP HP It Bl El Bd Ed "
                     "TH Dd Dt Os Nd SY YS bp ne".split())
SKIP_BLOCKS = {"TS": "TE", "EQ": "EN", "PS": "PE", "nf": "fi", "EX": "EE", "Vb": "Ve",
               "(T": ")T"}
FONT_JOIN = {"B", "I", "SM", "SB", "FN", "Tn"}
FONT_ALT = {"BR", "RB", "IR", "RI", "BI", "IB"}
# Function words for a crude language check: the Italian translations leave some
# strings untranslated (English msgids), and commands/examples have neither.
IT_WORDS = set("""il lo la gli le un uno una di del dello della dei degli delle da dal
dallo dalla dai dagli dalle al allo alla ai agli alle nel nello nella nei negli nelle
sul sullo sulla sui sugli sulle è e ed che non per con come sono si se ma anche questo
questa questi queste quello quella viene vengono può possono essere ha hanno più o
oppure ogni tutti tutte tutto quando dove cui suo sua suoi sue loro i sia tra fra
su ad né già solo ciascun ciascuno qualsiasi l dell all dall nell sull quest c""".split())
EN_WORDS = set("""the of and to is are be been this that these those with for by from it
its if an as or which when will can may was were has have not only also any each
such than then there their they would should must into""".split())


def looks_italian(text):
    words = re.findall(r"[^\W\d_]+", text.lower())
    it = sum(w in IT_WORDS for w in words)
    en = sum(w in EN_WORDS for w in words)
    return it >= 1 and it > 2 * en


SKIP_SECTIONS = {"NOME", "NAME", "SINTASSI", "SYNOPSIS", "SOMMARIO", "TRADUZIONE",
                 "VEDERE ANCHE", "VEDI ANCHE", "SEE ALSO"}


class Page:
    def __init__(self, name):
        self.name = name            # e.g. man1/bash.1
        self.title = os.path.basename(name).rsplit(".", 1)[0]
        self.paras = []
        self.cur = []               # pieces of the current paragraph
        self.glue = False
        self.skip_section = False

    def add(self, text):
        if self.skip_section:
            return
        if not text:
            return
        glue_after = text.endswith(GLUE)
        text = text.rstrip(GLUE)
        if text.startswith(GLUE):
            self.glue = True
            text = text.lstrip(GLUE)
        if text.strip():
            if self.cur and (self.glue or not self.cur):
                self.cur[-1] += text
            else:
                self.cur.append(text)
        self.glue = glue_after

    def add_glued(self, text):
        self.glue = True
        self.add(text)

    def brk(self):
        if self.cur:
            para = " ".join(self.cur).replace(GLUE, "")
            para = re.sub(r"\s+", " ", para).strip()
            if para:
                self.paras.append(para)
        self.cur = []
        self.glue = False


def convert(lines, name):
    page = Page(name)
    i = 0
    n = len(lines)
    tag_pending = False   # after .TP: the next text line is the tag
    mdoc_name = None

    def emit_text(text):
        nonlocal tag_pending
        if tag_pending:
            page.brk()
            page.add(text)
            page.brk()
            tag_pending = False
        else:
            page.add(text)

    queue = []            # bodies of true conditionals, processed as lines
    ie_results = []       # outcome of each .ie, consumed by its .el

    while queue or i < n:
        if queue:
            raw = queue.pop(0)
        else:
            raw = lines[i]
            i += 1
        # conditional blocks and definitions may span lines
        if raw[:1] in ".'":
            body = raw[1:].lstrip(" \t")
            line = strip_comment(body)
            m = re.match(r"([^\s\\]+)\s*(.*)$", line)
            if not m:
                continue            # a lone ".", a ".\\}" closing line, comment-only
            req, rest = m.group(1), m.group(2)
            if req in ("de", "de1", "am", "ig", "dei", "ami"):
                parts = rest.split()
                end = ".."
                if req == "ig" and parts:
                    end = "." + parts[0]
                elif req != "ig" and len(parts) > 1:
                    end = "." + parts[1]
                while i < n and lines[i].rstrip() != end and not (
                        end == ".." and lines[i].strip() == ".."):
                    i += 1
                i += 1
                continue
            if req in ("if", "ie", "el", "while"):
                # We format as nroff would: "n" is true, "t" (and "o", "e", "v") false;
                # any other condition (registers, string comparisons) counts as false.
                if req == "el":
                    cond = not (ie_results.pop() if ie_results else True)
                    body = rest
                else:
                    cm = re.match(r"(!?)([ntoev])(?![\w(\\'])\s*(.*)$", rest)
                    if cm:
                        cond = (cm.group(2) == "n") != (cm.group(1) == "!")
                        body = cm.group(3)
                    else:
                        cond, body = False, ""
                    if req == "ie":
                        ie_results.append(cond)
                    if req == "while":
                        cond = False
                if cond:
                    body = re.sub(r"^\\\{\\?\s*", "", body.strip())
                    if body.strip():
                        queue.insert(0, body)
                    continue    # a \{ block's lines follow and are read normally
                # false: skip a \{ ... \} block entirely
                depth = line.count("\\{") - line.count("\\}")
                while depth > 0 and i < n:
                    l2 = strip_comment(lines[i])
                    depth += l2.count("\\{") - l2.count("\\}")
                    i += 1
                continue
            if req in SKIP_BLOCKS:
                end = SKIP_BLOCKS[req]
                page.brk()
                while i < n:
                    l2 = lines[i].lstrip(".' \t")
                    i += 1
                    if re.match(re.escape(end) + r"(\s|$)", l2):
                        break
                page.brk()
                continue
            if req == "Bd" and "-literal" in rest or req == "Bd" and "-unfilled" in rest:
                page.brk()
                while i < n and not re.match(r"[.']\s*Ed\b", lines[i]):
                    i += 1
                i += 1
                continue
            if req in ("SH", "Sh", "SS", "Ss"):
                page.brk()
                tag_pending = False
                if req in ("SH", "Sh"):
                    title = " ".join(unescape(a) for a in split_args(rest)).strip().upper()
                    if not title and i < n:        # .SH with the title on the next line
                        title = unescape(lines[i]).strip().upper()
                        i += 1
                    page.skip_section = title in SKIP_SECTIONS
                continue
            if req in ("TP", "TQ"):
                page.brk()
                tag_pending = True
                continue
            if req == "It":
                page.brk()
                args = split_args(rest)
                if args:
                    page.add(mdoc_inline("No", args, mdoc_name or page.title))
                page.brk()
                continue
            if req in ("IP", "HP"):
                page.brk()
                tag_pending = False
                continue
            if req in BREAK_REQUESTS:
                page.brk()
                if req == "Nd":
                    pass
                continue
            args = split_args(rest)
            if req in FONT_JOIN:
                if args:
                    emit_text(" ".join(unescape(a) for a in args))
                continue
            if req in FONT_ALT:
                emit_text("".join(unescape(a) for a in args))
                continue
            if req == "q":          # zdump: .q text [punct [prefix]]
                a = [unescape(x) for x in args] + ["", "", ""]
                emit_text(a[2] + "\u201c" + a[0] + "\u201d" + a[1])
                continue
            if req == "URL":        # gnumeric/util-linux: .URL url [text [punct]]
                a = [unescape(x) for x in args] + ["", "", ""]
                emit_text(a[1] or a[0])
                if a[2]:
                    page.add_glued(a[2])
                continue
            if req in ("UR", "MT"):
                continue            # the link text follows; the address is dropped
            if req in ("UE", "ME"):
                if args:
                    page.add_glued(unescape(args[0]))
                continue
            if req == "Nm" and args and mdoc_name is None:
                mdoc_name = unescape(args[0])
            if req in MDOC_CALLABLE:
                emit_text(mdoc_inline(req, args, mdoc_name or page.title))
                continue
            # every other request (.PD .in .ft .ds .nr .IX .ad .nh .so ...) is dropped
            continue
        # a text line
        if not raw.strip():
            page.brk()
            tag_pending = False
            continue
        text = unescape(strip_comment(raw))
        if text.strip() or text.endswith(GLUE):
            emit_text(text)
    page.brk()
    return page.paras


def read_page(path):
    with open(path, "rb") as f:
        data = f.read()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    text = data.decode("utf-8", errors="replace")
    return text.replace("\r\n", "\n").split("\n")


def is_redirect(lines):
    body = [l for l in lines if l.strip() and not re.match(r"[.']\s*\\\"", l)]
    return len(body) <= 2 and any(re.match(r"[.']\s*so\s", l) for l in body)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("man_dir")
    ap.add_argument("out_dir")
    ap.add_argument("--prefix", default="it")
    ap.add_argument("--eval-frac", type=float, default=0.10)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--min-words", type=int, default=8)
    a = ap.parse_args()

    pages = []
    for root, dirs, files in os.walk(a.man_dir):
        dirs.sort()
        for fn in sorted(files):
            p = os.path.join(root, fn)
            if os.path.islink(p) or not os.path.isfile(p):
                continue
            rel = os.path.relpath(p, a.man_dir)
            if rel.endswith(".gz"):
                rel = rel[:-3]
            pages.append((rel, p))
    pages.sort()
    dump_dropped = os.environ.get("ROFF_TO_TEXT_DUMP_DROPPED")
    if not pages:
        sys.exit(f"error: no man pages under {a.man_dir}")

    seen = set()
    per_page = []
    n_raw = n_short = n_dup = n_redirect = n_lang = 0
    dropped_lang = []
    for rel, p in pages:
        lines = read_page(p)
        if is_redirect(lines):
            n_redirect += 1
            continue
        kept = []
        for para in convert(lines, rel):
            n_raw += 1
            if len(para.split()) < a.min_words:
                n_short += 1
                continue
            if not looks_italian(para):
                n_lang += 1
                dropped_lang.append(para)
                continue
            if para in seen:
                n_dup += 1
                continue
            seen.add(para)
            kept.append(para)
        if kept:
            per_page.append((rel, kept))

    if dump_dropped:
        with open(dump_dropped, "w", encoding="utf-8") as f:
            f.write("\n".join(dropped_lang) + "\n")
    total = sum(len(k) for _, k in per_page)
    target = int(round(a.eval_frac * total))
    train, evals, eval_pages = [], [], []
    n_eval = 0
    for rel, kept in sorted(per_page, key=lambda rk: hashlib.sha256(rk[0].encode()).hexdigest()):
        if n_eval + len(kept) <= target:
            evals.extend(kept)
            eval_pages.append(rel)
            n_eval += len(kept)
        else:
            train.extend(kept)
    rng = random.Random(a.seed)
    rng.shuffle(train)
    rng.shuffle(evals)

    os.makedirs(a.out_dir, exist_ok=True)
    for split, rows in (("train", train), ("eval", evals)):
        path = os.path.join(a.out_dir, f"{a.prefix}_{split}.jsonl")
        with open(path, "w", encoding="utf-8") as f:
            for t in rows:
                f.write(json.dumps({"text": t}, ensure_ascii=False) + "\n")

    wtrain = sum(len(t.split()) for t in train)
    weval = sum(len(t.split()) for t in evals)
    print(f"pages: {len(pages)} files ({n_redirect} .so redirects skipped), "
          f"{len(per_page)} with kept paragraphs, {len(eval_pages)} held out for eval")
    print(f"paragraphs: {n_raw} extracted, {n_short} under {a.min_words} words, "
          f"{n_lang} not Italian (untranslated text, commands), {n_dup} duplicates dropped")
    print(f"train: {len(train)} paragraphs, {wtrain} words")
    print(f"eval:  {len(evals)} paragraphs, {weval} words")
    print("eval pages: " + " ".join(sorted(eval_pages)))


if __name__ == "__main__":
    main()
