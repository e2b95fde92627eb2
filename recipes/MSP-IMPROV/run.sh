#!/usr/bin/env bash
# MSP-IMPROV, 4 classes (neu, hap, ang, sad; 7798 turns), speaker-independent folds.
#   ./run.sh --stage 0 --stop_stage 3                   full pipeline with the defaults below
#   ./run.sh --protocol loso_session                    6 folds by session instead of 12 by speaker
#   ./run.sh --prep_opts "--conditions S,P" --tag improvised   a subset of the recording conditions
#   ./run.sh --help                                     every option
set -euo pipefail
cd "$(dirname "$0")"
. ./db.sh
exec ../shared/stages.sh \
    --corpus_root "${MSP_IMPROV_ROOT}" \
    --encoder whisper_tiny_en \
    --protocol loso_speaker \
    "$@"
