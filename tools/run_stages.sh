#!/usr/bin/env bash
# Run the stages of a recipe in order, then evaluate the last stage's newest model.
#   bash tools/run_stages.sh yaml/wespeaker_base_plus/1_frozen.yaml yaml/wespeaker_base_plus/2_joint.yaml \
#        yaml/wespeaker_base_plus/3_lmft.yaml [-- extra options for every stage, e.g. --device cuda]
# Each stage names where it starts (initial_model_from: the previous stage's save_path) and trains in its
# own save_path; running the script again resumes an interrupted stage and skips finished ones.
# Logs: log/<yaml name>.log (training) and log/<last yaml name>.eval.log (LOG_DIR=folder: there instead of log/).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
configs=(); extra=()
while [ $# -gt 0 ]; do
  if [ "$1" = "--" ]; then shift; extra=("$@"); break; fi
  configs+=("$1"); shift
done
[ ${#configs[@]} -gt 0 ] || { echo "usage: bash tools/run_stages.sh STAGE1.yaml [STAGE2.yaml ...] [-- options]" >&2; exit 2; }
log=${LOG_DIR:-log}
mkdir -p "$log"
for config in "${configs[@]}"; do
  name=$(basename "$config" .yaml)
  echo "== $config (log: $log/$name.log)"
  "$PY" trainSpeakerNet.py --config "$config" "${extra[@]}" >> "$log/$name.log" 2>&1
done
last=${configs[${#configs[@]}-1]}
echo "== evaluating the newest model of $last (log: $log/$(basename "$last" .yaml).eval.log)"
newest=$("$PY" -c 'import os, sys
from core.cli import build_parser
from core.config import load_config
from model_files import find_checkpoints
config = load_config(build_parser(""), sys.argv[1:])
print(find_checkpoints(os.path.join(config["save_path"], "model"))[-1][1])' --config "$last" "${extra[@]}")
"$PY" trainSpeakerNet_Eval.py --config "$last" --eval --initial_model "$newest" "${extra[@]}" \
  2>> "$log/$(basename "$last" .yaml).eval.log" | tee -a "$log/$(basename "$last" .yaml).eval.log"
