#!/usr/bin/env bash
# Stage 0 for your own corpus: CSV or <emotion>/<speaker>_*.wav folder -> data/manifest.csv,
# data/folds/{loso_speaker[,given]} and data/train_overrides.yaml (the corpus's labels, read by stage 2).
#   local/data_prep.sh <corpus.csv | corpus_dir> <data_dir> [--allow_partial] [--protocols loso_speaker,given]
set -euo pipefail
root="${1:-}"; data_dir="$2"; shift 2
[ -n "${root}" ] || { echo "CORPUS_CSV / CORPUS_DIR is not set: edit db.sh or export CORPUS_CSV=/path/to/corpus.csv" >&2; exit 1; }
python="${python:-}"  # exported by ../shared/stages.sh
if [ -z "${python}" ]; then if [ -x ../../.venv/bin/python ]; then python=../../.venv/bin/python; else python=python3; fi; fi
protocols="$("${python}" -m cta_rnn.driver protocols "${root}")"  # a --protocols in "$@" wins
"${python}" -m cta_rnn.prepare custom --root "${root}" --out "${data_dir}" --protocols "${protocols}" "$@"
"${python}" -m cta_rnn.driver labels "${data_dir}/manifest.csv" "${data_dir}/train_overrides.yaml"
