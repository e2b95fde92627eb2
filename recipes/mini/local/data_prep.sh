#!/usr/bin/env bash
# Stage 0 of the mini recipe: synthesise the corpus, then manifest + folds.
#   local/data_prep.sh <corpus_dir (default data/mini_corpus)> <data_dir> [cta_rnn.corpora.mini options]
set -euo pipefail
corpus_dir="${1:-}"; data_dir="$2"; shift 2
[ -n "${corpus_dir}" ] || corpus_dir="${data_dir}/mini_corpus"
python="${python:-python3}"; [ -x ../../.venv/bin/python ] && python=../../.venv/bin/python
"${python}" -m cta_rnn.corpora.mini --out "${corpus_dir}" "$@"
"${python}" -m cta_rnn.prepare manifest --root "${corpus_dir}/manifest.csv" --out "${data_dir}"
