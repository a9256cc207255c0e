#!/bin/sh
# options-table.sh: rewrites docs/operations.md's options table from
# `descentd --help-markdown` (the option table in server/base/config.h is the
# source; test_docs checks the two agree).  Usage: options-table.sh [DESCENTD]
set -eu
cd "$(dirname "$0")/../.."
bin=${1:-build/bin/descentd}
tmp=$(mktemp)
"$bin" --help-markdown > "$tmp.table"
awk -v table="$tmp.table" '
  /^\| option \| environment \| default \| meaning \|$/ { while ((getline l < table) > 0) print l; skip = 1; next }
  skip && /^\|/ { next }
  { skip = 0; print }
' docs/operations.md > "$tmp"
mv "$tmp" docs/operations.md
rm -f "$tmp.table"
