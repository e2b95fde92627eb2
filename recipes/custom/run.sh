#!/usr/bin/env bash
# Your own corpus: a CSV (path, emotion, speaker[, session, text, split, gender]) in CORPUS_CSV, or a folder
# <emotion>/<speaker>_*.wav in CORPUS_DIR (set in db.sh, db.local.sh or the environment). Any label set.
#   CORPUS_CSV=/data/my.csv ./run.sh                    stages 0-3, leave-one-speaker-out folds
#   CORPUS_DIR=/data/my_corpus ./run.sh --folds 1-3     a folder tree, the first 3 folds
#   ./run.sh --protocol given                           one fold from the CSV's split column
#   ./run.sh --prep_opts --allow_partial                skip missing files, accept weak labels / leakage
#   ./run.sh --help                                     every option
set -euo pipefail
for v in CORPUS_CSV CORPUS_DIR; do  # paths from the environment are relative to where run.sh was called
    if [ -n "${!v:-}" ] && [[ "${!v}" != /* ]]; then export "${v}=${PWD}/${!v}"; fi
done
cd "$(dirname "$0")"
. ./db.sh
exec ../shared/stages.sh \
    --corpus_root "${CORPUS_CSV:-${CORPUS_DIR}}" \
    --encoder whisper_tiny_en \
    --protocol loso_speaker \
    "$@"
