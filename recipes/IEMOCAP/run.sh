#!/usr/bin/env bash
# IEMOCAP, 4 classes (neu, hap+exc, ang, sad; 5531 utterances), speaker-independent folds.
#   ./run.sh --stage 0 --stop_stage 3                   full pipeline with the defaults below
#   ./run.sh --protocol loso_session                    5 folds by session instead of 10 by speaker
#   ./run.sh --encoder whisper_large_v3 --device cuda   another encoder (hparams/encoder/*.yaml)
#   ./run.sh --stage 4 --stop_stage 4 --sweep_layers "$(seq -s' ' 0 32)"   ablations + layer sweep
#   ./run.sh --help                                     every option
set -euo pipefail
cd "$(dirname "$0")"
. ./db.sh
exec ../shared/stages.sh \
    --corpus_root "${IEMOCAP_ROOT}" \
    --encoder whisper_tiny_en \
    --protocol loso_speaker \
    "$@"
