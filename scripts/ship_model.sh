#!/usr/bin/env bash
# Export a trained run into the shipped zoo as int8 TFLite, fp32 ONNX and int8 ONNX, each through
# the export accuracy gate, then evaluate the shipped artefacts on the held-out test split.
# usage: scripts/ship_model.sh RUN_DIR NAME [DATA]      e.g. scripts/ship_model.sh runs/smile smile
set -euo pipefail
run=$1; name=$2; data=${3:-}
zoo=edgecv/zoo
edgecv export "$run" --format tflite --quant int8 --out "$zoo/$name.int8.tflite"
edgecv export "$run" --format onnx --quant fp32 --out "$zoo/$name.onnx"
edgecv export "$run" --format onnx --quant int8 --out "$zoo/$name.int8.onnx"
for f in "$zoo/$name.int8.tflite" "$zoo/$name.onnx" "$zoo/$name.int8.onnx"; do
  echo "== $f"; edgecv eval "$name" --model "$f" ${data:+--data "$data"} --split test --json
done
