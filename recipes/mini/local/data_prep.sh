#!/usr/bin/env bash
# Stage 0 of the mini recipe: synthesise the corpus, then manifest + folds.
#   local/data_prep.sh <corpus_dir (default data/mini_corpus)> <data_dir> [cta_rnn.corpora.mini options]
set -euo pipefail
corpus_dir="${1:-}"; data_dir="$2"; shift 2  # prep_opts: --n_sentences N --speakers N --jitter J --seed S
[ -n "${corpus_dir}" ] || corpus_dir="${data_dir}/mini_corpus"
python="${python:-}"  # exported by ../shared/stages.sh
if [ -z "${python}" ]; then if [ -x ../../.venv/bin/python ]; then python=../../.venv/bin/python; else python=python3; fi; fi
"${python}" -m cta_rnn.corpora.mini --out "${corpus_dir}" "$@"
"${python}" -m cta_rnn.prepare manifest --root "${corpus_dir}/manifest.csv" --out "${data_dir}"
