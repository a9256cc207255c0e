#!/bin/sh
# seed_snapshots.sh: regenerates the daemon-made seeds of the snapshot and
# json corpora: snapshot files written by a real descentd, and the state
# documents it exports.  Run from the repository root after a build:
#     tests/fuzz/seed_snapshots.sh [BUILD_DIR]      (default: build)
# Starts one daemon on a free port with a temporary data dir and stops it by
# its pid.
set -eu
BUILD=${1:-build}
OUT_SNAP=tests/fuzz/corpus/snapshot
OUT_JSON=tests/fuzz/corpus/json
DIR=$(mktemp -d)
"$BUILD/bin/descentd" --listen 127.0.0.1:0 --data-dir "$DIR/data" >"$DIR/out" 2>"$DIR/log" &
PID=$!
trap 'kill $PID 2>/dev/null || true; rm -rf "$DIR"' EXIT
for _ in 1 2 3 4 5 6 7 8 9 10; do grep -q listening "$DIR/out" 2>/dev/null && break; sleep 0.2; done
URL=$(awk '{print $3}' "$DIR/out")
J='Content-Type: application/json'
post() { curl -sf -X "$1" "$URL$2" -H "$J" -d "$3" >/dev/null; }

# adam, one step, then amsgrad switched on: a buffer without history at step 1
post POST /v1/optimizers '{"name":"adam","algorithm":"adam","tensors":[{"name":"W","shape":[2,3]},{"name":"b","shape":[2]}]}'
post POST /v1/optimizers/adam/step '{"grads":{"W":[[0.5,-1,2],[0.25,0,-0.125]],"b":[1,-1]}}'
post PATCH /v1/optimizers/adam '{"hyper":{"amsgrad":true}}'
# sgd with momentum and a schedule, two steps
post POST /v1/optimizers '{"name":"sgd","algorithm":"momentum","hyper":{"lr":0.1,"weight_decay":0.01},"schedule":{"type":"step","step_size":1,"gamma":0.5},"tensors":[{"name":"w","shape":[4],"init":{"normal":{"std":1,"seed":42}}}]}'
post POST /v1/optimizers/sgd/step '{"grads":[1,2,3,4]}'
post POST /v1/optimizers/sgd/step '{"grads":[0.5,-0.5,0.25,-0.25]}'
# sync rmsprop, centered, with clipping
post POST /v1/optimizers '{"name":"sync","algorithm":"rmsprop","hyper":{"centered":true,"momentum":0.9},"mode":"sync","workers":2,"min_workers":1,"round_timeout_ms":5000,"aggregate":"sum","clip_grad_norm":1.0,"tensors":[{"name":"v","shape":[3],"offset":10}]}'
# random search, one ask and tell
post POST /v1/optimizers '{"name":"rs","algorithm":"random_search","hyper":{"scale":0.5,"seed":7},"tensors":[{"name":"x","shape":[2],"values":[1,-1]}]}'
curl -sf -X POST "$URL/v1/optimizers/rs/ask" -H "$J" -d '{}' >/dev/null
post POST /v1/optimizers/rs/tell '{"candidate":1,"loss":0.75}'
# sparse (version 2 files): adagrad with an embedding table beside a dense tensor, two steps with
# a repeated row; sparse_adam on a 2^40-row table with a normal init, one step
post POST /v1/optimizers '{"name":"emb","algorithm":"adagrad","hyper":{"lr":0.1},"tensors":[{"name":"E","shape":[1000,3],"sparse":true,"init":{"uniform":{"low":-0.5,"high":0.5,"seed":3}}},{"name":"w","shape":[2]}]}'
post POST /v1/optimizers/emb/step '{"grads":{"E":{"rows":[7,2,7],"values":[[1,2,3],[0.5,0.5,0.5],[-1,0,1]]},"w":[1,-1]}}'
post POST /v1/optimizers/emb/step '{"grads":{"E":{"rows":[999],"values":[[0.25,0,-0.25]]},"w":[0.5,0.5]}}'
post POST /v1/optimizers '{"name":"sadam","algorithm":"sparse_adam","tensors":[{"name":"T","shape":[1099511627776,2],"sparse":true,"offset":5,"init":{"normal":{"std":0.1,"seed":9}}}]}'
post POST /v1/optimizers/sadam/step '{"grads":{"T":{"rows":[1099511627775,0],"values":[[1,-1],[2,-2]]}}}'

for n in adam sgd sync rs emb sadam; do curl -sf "$URL/v1/optimizers/$n/state" >"$OUT_JSON/state-$n.json"; done
kill "$PID"
wait "$PID" || true
for n in adam sgd sync rs emb sadam; do cp "$DIR/data/$n.snap" "$OUT_SNAP/daemon-$n.snap"; done
echo "seeds written: $OUT_SNAP/daemon-*.snap $OUT_JSON/state-*.json"
