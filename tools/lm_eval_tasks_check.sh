#!/usr/bin/env bash
# Which of lm-eval's own task files graft runs: `graft eval-check` over the task tree of an
# lm-eval release (downloaded from PyPI, never installed), tallied by status and reason.
# A developer-machine check (needs network to PyPI); never run in CI.
#
#   tools/lm_eval_tasks_check.sh [VERSION]      # default 0.4.13
#
# Writes target/lm_eval_tasks/<VERSION>.tsv (one row per task) and prints a Markdown summary:
# tasks graft runs, tasks refused because they call Python (`!function`), tasks refused for any
# other reason (each reason, normalised, with its count), and group files.
set -euo pipefail
cd "$(dirname "$0")/.."
version=${1:-0.4.13}
out=target/lm_eval_tasks
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 -m pip download -q "lm-eval==$version" --no-deps -d "$work"
(cd "$work" && python3 -m zipfile -e lm_eval-*.whl tree)
cargo build --release -q
./target/release/graft --force eval-check --include-path "$work/tree/lm_eval/tasks" \
  --output "$out/$version.tsv" || true
python3 - "$out/$version.tsv" "$version" <<'EOF'
import collections, csv, re, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
status = collections.Counter(r["status"] for r in rows)
print(f"lm-eval {sys.argv[2]}: {sum(v for k, v in status.items() if k != 'group')} task files, "
      f"{status['group']} group files")
for k in ("ok", "python", "refused"):
    print(f"- {k}: {status[k]}")
reasons = collections.Counter(
    re.sub(r"`[^`]*`", "`…`", r["reason"])[:110] for r in rows if r["status"] == "refused")
if reasons:
    print("\n| refused for | tasks |\n|---|---:|")
    for reason, n in reasons.most_common():
        print(f"| {reason.replace('|', '/')} | {n} |")
EOF
