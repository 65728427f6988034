#!/usr/bin/env bash
# The built-in demo: synthetic data -> untrained EER -> train -> trained EER.
# Run from anywhere after installing requirements into .venv (see README).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
CONFIG=yaml/demo.yaml

if [ ! -f demo/pretrained/WavLM-Tiny.pt ]; then
  rm -rf demo
  "$PY" -m tools.make_demo_data --out demo
fi
rm -rf exps/demo
mkdir -p exps

echo "== Untrained model (tiny random WavLM + fresh MHFA) =="
untrained=$("$PY" trainSpeakerNet_Eval.py --config "$CONFIG" --eval --initial_model none)
echo "$untrained"

echo "== Training (log: exps/demo/result/scores.txt) =="
"$PY" trainSpeakerNet.py --config "$CONFIG" > /dev/null

last=$(ls exps/demo/model/model*.model | tail -n 1)
echo "== Trained model ($last) =="
trained=$("$PY" trainSpeakerNet_Eval.py --config "$CONFIG" --eval --initial_model "$last" \
          --score_file exps/demo/result/demo_scores.txt)
echo "$trained"

echo "== Demo summary =="
echo "untrained: $untrained"
echo "trained:   $trained"
"$PY" - "$untrained" "$trained" <<'PYEOF'
import sys
before, after = (float(line.split()[1]) for line in sys.argv[1:3])
print(f"EER {before:.2f}% -> {after:.2f}% (ratio {after / before:.2f}; the demo aims at <= 0.5)")
PYEOF
