#!/usr/bin/env python3
"""Extract character-vector objects from an installed R package's lazy-load
data database (data/Rdata.rdx + data/Rdata.rdb), using only the standard
library.  Supports exactly the subset of R's XDR serialization format needed
for plain character vectors (and the small index lists that point at them).

Usage: rdata_extract.py PKGDIR/data/Rdata OBJECT_NAME > out.txt
Prints the vector's elements one per line (NA elements as empty lines).
"""
import bz2
import gzip
import lzma
import struct
import sys
import zlib

NILVALUE, SYMSXP, LISTSXP, CHARSXP, LGLSXP = 254, 1, 2, 9, 10
INTSXP, REALSXP, STRSXP, VECSXP, REFSXP = 13, 14, 16, 19, 255
SPECIAL_ENVS = {241, 242, 253, 251, 252, 250, 249, 248, 247, 246}  # base/empty/global/etc.


class Reader:
    def __init__(self, buf):
        if buf[:2] != b"X\n":
            raise ValueError("not an XDR R serialization stream")
        self.b, self.p, self.refs = buf, 2, []
        version = self.int()
        self.int()  # writer R version
        self.int()  # minimal reader R version
        if version == 3:
            n = self.int()
            self.p += n  # native encoding name

    def int(self):
        (v,) = struct.unpack_from(">i", self.b, self.p)
        self.p += 4
        return v

    def item(self):
        flags = self.int()
        t = flags & 0xFF
        has_attr, has_tag = flags & (1 << 9), flags & (1 << 10)
        if t == NILVALUE or t in SPECIAL_ENVS:
            return None
        if t == REFSXP:
            idx = flags >> 8 or self.int()
            return self.refs[idx - 1]
        if t == SYMSXP:
            name = self.item()
            self.refs.append(name)
            return name
        if t == CHARSXP:
            n = self.int()
            if n == -1:
                return None
            s = self.b[self.p:self.p + n]
            self.p += n
            return s.decode("utf-8", errors="replace") if not (flags >> 12) & 4 else s.decode("latin-1")
        if t == LISTSXP:  # pairlist -> list of (tag, value)
            out = []
            while True:
                if has_attr:
                    self.item()
                tag = self.item() if has_tag else None
                out.append((tag, self.item()))
                flags = self.int()
                t = flags & 0xFF
                has_attr, has_tag = flags & (1 << 9), flags & (1 << 10)
                if t == NILVALUE:
                    return out
                if t != LISTSXP:
                    raise ValueError("unsupported pairlist tail type %d" % t)
        if t in (LGLSXP, INTSXP):
            n = self.int()
            v = list(struct.unpack_from(">%di" % n, self.b, self.p))
            self.p += 4 * n
        elif t == REALSXP:
            n = self.int()
            v = list(struct.unpack_from(">%dd" % n, self.b, self.p))
            self.p += 8 * n
        elif t in (STRSXP, VECSXP):
            n = self.int()
            v = [self.item() for _ in range(n)]
        else:
            raise ValueError("unsupported SEXP type %d" % t)
        if has_attr:
            attrs = dict(self.item())
            names = attrs.get("names")
            if t == VECSXP and names:
                return dict(zip(names, v))
        return v


def unpack(blob):
    (n,) = struct.unpack_from(">I", blob, 0)
    data = blob[4:]
    if data[:2] in (b"x\x9c", b"x\xda", b"x\x01", b"x^"):
        out = zlib.decompress(data)
    elif data[:1] == b"Z":
        out = lzma.decompress(data[1:])
    elif data[:1] == b"2":
        out = bz2.decompress(data[1:])
    elif data[:1] == b"0":
        out = data[1:]
    else:
        out = zlib.decompress(data)
    assert len(out) == n, "length mismatch"
    return out


def read_index(base):
    # The .rdx file is a saveRDS() stream: gzip-compressed (or, in some R
    # builds, length-prefixed zlib like the .rdb records).
    with open(base + ".rdx", "rb") as f:
        raw = f.read()
    raw = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else unpack(raw)
    return Reader(raw).item()


def load(base, name):
    index = read_index(base)
    off, length = index["variables"][name]
    with open(base + ".rdb", "rb") as f:
        f.seek(int(off))
        blob = f.read(int(length))
    return Reader(unpack(blob)).item()


def main():
    base, name = sys.argv[1], sys.argv[2]
    if name == "--list":
        print("\n".join(read_index(base)["variables"]))
        return
    vec = load(base, name)
    out = sys.stdout.buffer
    for line in vec:
        out.write((line or "").encode("utf-8") + b"\n")


if __name__ == "__main__":
    main()
