#!/usr/bin/env bash
# Every stage on the real 169-label catalogue in ../shared/data/fashion-products (7,168 images), on a CPU:
# serve it on 127.0.0.1:8765 (the port its train.json names), download it through our own downloader,
# shard it with a stratified validation split, train from scratch, search thresholds with CV, evaluate.
#   bash tools/fashion_products.sh [OUT_DIR] [extra --override arguments for training...]
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${FASHION_PRODUCTS_DIR:-../shared/data/fashion-products}
OUT=${1:-runs/fashion_products_data}
shift || true
PY=${PYTHON:-.venv/bin/python}
[ -f "$DATA/train.json" ] || { echo "error: $DATA/train.json not found (set FASHION_PRODUCTS_DIR)" >&2; exit 2; }
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}

"$PY" -m fashion_tf.testserver --root "$DATA" --port 8765 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
sleep 2
t0=$(date +%s)
"$PY" tools/download_images.py --input "$DATA/train.json" --output-dir "$OUT/download" --workers 16
t1=$(date +%s)
kill $SERVER 2>/dev/null || true
"$PY" tools/make_tfrecords.py --input "$OUT/download" --label-map "$DATA/label_map.csv" \
    --output-dir "$OUT/tfrecords" --val-fraction 0.2 --seed 0
t2=$(date +%s)
"$PY" -m fashion_tf.train --config configs/fashion_products.json \
    --override data.tfrecords="$OUT/tfrecords" --override output_dir="$OUT/run" "$@"
t3=$(date +%s)
"$PY" -m fashion_tf.threshold_search --run-dir "$OUT/run" --cv 5 --mode auto
t4=$(date +%s)
"$PY" -m fashion_tf.evaluate --run-dir "$OUT/run" --data "$OUT/tfrecords" --split validation --group articleType
t5=$(date +%s)
echo "stage seconds: download $((t1-t0)), shards $((t2-t1)), train $((t3-t2)), thresholds $((t4-t3)), evaluate $((t5-t4))"
