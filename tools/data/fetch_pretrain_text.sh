#!/usr/bin/env bash
# Regenerate data/pretrain/austen.txt and data/pretrain/austen.eval.txt.
#
# Source: Debian's r-cran-janeaustenr package (Jane Austen's novels, public
# domain text; package MIT-licensed), fetched with apt-get from the Debian
# archive — the only network access needed.  No R installation is needed:
# the package's lazy-load data database is decoded by rdata_extract.py
# (Python 3 standard library only).
#
# Usage: tools/data/fetch_pretrain_text.sh            (from anywhere)
#   JANEAUSTENR_DEB=/path/to/r-cran-janeaustenr_*.deb  use an already downloaded .deb
#   OUT_DIR=/some/dir                                  write elsewhere (default data/pretrain)
#
# Needs: bash, python3 (>= 3.6), dpkg-deb (or ar + tar), and apt-get for the download.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
OUT_DIR="${OUT_DIR:-$ROOT/data/pretrain}"
PKG=r-cran-janeaustenr
BOOKS="sensesensibility prideprejudice emma persuasion"

# The version the bundled files were made from (Debian bookworm, 1.0.0-1).
PINNED_DEB_SHA256=df6bddf211906d1ff404f8ff662c21b34e6660e7f54a311084e749050c019c95
PINNED_TRAIN_SHA256=d4c9b9f32dbfa9abd437fa65b30c6f48de88846879c4932057057d6bc657635b
PINNED_EVAL_SHA256=2bb624bb902503d172f4a1d74150fcd4b03a6fd2d4e7458d41174c4748be6575

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"

if [ -n "${JANEAUSTENR_DEB:-}" ]; then
  cp "$JANEAUSTENR_DEB" .
else
  if ! command -v apt-get >/dev/null; then
    echo "error: apt-get not found; download the $PKG .deb by other means and set JANEAUSTENR_DEB" >&2
    exit 1
  fi
  # A fresh machine may have no package lists yet.
  if ! apt-cache show "$PKG" >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
  fi
  # apt-get download needs no root; as root it warns about the _apt sandbox, harmlessly.
  chmod 0777 "$WORK"
  apt-get download -qq "$PKG"
fi
DEB="$(ls ./*.deb)"
echo "package: $(basename "$DEB")"
DEB_SHA="$(sha256sum "$DEB" | cut -d' ' -f1)"
if [ "$DEB_SHA" != "$PINNED_DEB_SHA256" ]; then
  echo "warning: $DEB sha256 $DEB_SHA differs from the pinned 1.0.0-1 build; outputs may differ" >&2
fi

mkdir x
if command -v dpkg-deb >/dev/null; then
  dpkg-deb -x "$DEB" x
else
  (cd x && ar x "../$DEB" && tar -xf data.tar.* && rm -f data.tar.* control.tar.* debian-binary)
fi
DB="$(find x -path '*/janeaustenr/data/Rdata.rdx' | head -n1)"
DB="${DB%.rdx}"
[ -n "$DB" ] || { echo "error: janeaustenr data/Rdata.rdx not found in $DEB" >&2; exit 1; }

mkdir raw
for b in $BOOKS; do
  python3 "$HERE/rdata_extract.py" "$DB" "$b" > "raw/$b.txt"
done
python3 "$HERE/clean_austen.py" raw "$OUT_DIR"

TRAIN_SHA="$(sha256sum "$OUT_DIR/austen.txt" | cut -d' ' -f1)"
EVAL_SHA="$(sha256sum "$OUT_DIR/austen.eval.txt" | cut -d' ' -f1)"
if [ "$TRAIN_SHA" = "$PINNED_TRAIN_SHA256" ] && [ "$EVAL_SHA" = "$PINNED_EVAL_SHA256" ]; then
  echo "ok: outputs match the bundled files byte for byte"
elif [ "$DEB_SHA" = "$PINNED_DEB_SHA256" ]; then
  echo "error: same package but different output (train $TRAIN_SHA, eval $EVAL_SHA)" >&2
  exit 1
else
  echo "note: outputs differ from the bundled files (different package build)" >&2
fi
