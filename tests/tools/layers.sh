#!/bin/sh
# layers.sh: checks that no server file includes a header of a layer above
# its own.  Usage: layers.sh LAYER... (lowest first, as the Makefile's
# SERVER_LAYERS).  server/*.c at the top (main, daemon) may include any.
# docs/architecture.md draws the same layers; this makes the drawing true.
set -eu
cd "$(dirname "$0")/../.."
[ $# -gt 0 ] || { echo "usage: $0 LAYER..." >&2; exit 2; }
rank=0
map=$(mktemp)
trap 'rm -f "$map"' EXIT
for layer in "$@"; do
  rank=$((rank + 1))
  for h in server/"$layer"/*.h; do
    [ -e "$h" ] && echo "$(basename "$h") $rank $layer" >> "$map"
  done
done
bad=0
rank=0
for layer in "$@"; do
  rank=$((rank + 1))
  for f in server/"$layer"/*.c server/"$layer"/*.h; do
    [ -e "$f" ] || continue
    for inc in $(sed -n 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*"\([^"]*\)".*/\1/p' "$f"); do
      line=$(grep "^$inc " "$map" || true)
      if [ -z "$line" ]; then
        echo "layers: $f includes \"$inc\", which is in no layer" >&2; bad=1; continue
      fi
      r=$(echo "$line" | cut -d' ' -f2); l=$(echo "$line" | cut -d' ' -f3)
      if [ "$r" -gt "$rank" ]; then
        echo "layers: $f ($layer) includes $inc from the $l layer above it" >&2; bad=1
      fi
    done
  done
done
[ $bad -eq 0 ] && echo "layers: $(wc -l < "$map") headers in $# layers, no include points up"
exit $bad
