#!/usr/bin/env bash
# mini: the embedded default recipe. A small emotional-speech corpus synthesised offline with
# espeak-ng (10 voices = 5 sessions x F/M, 4 prosodic "emotions"), encoded with the embedded
# Whisper tiny.en (a 10-s window instead of 30 s, pairs of frames averaged: 25 Hz), CTA-RNN trained and tested
# on every leave-one-speaker-out fold (10 held-out speakers) in two jobs, scored. CPU, minutes.
#
#   ./run.sh                               stages 0-3 with the defaults below (all 10 folds)
#   ./run.sh --stage 2 --folds 1-3         a subset of folds (scores are labelled as a subset)
#   ./run.sh --stage 5 --stop_stage 5      the validation-only hyperparameter search of hparams/tune.yaml
#   ./run.sh --stage 4 --stop_stage 4      ablations (no CA, no TA, last layer, SUPERB) + layer sweep
#   ./run.sh --stage 2 -- --lr=0.0005      hyperpyyaml overrides after --
set -euo pipefail
cd "$(dirname "$0")"
exec ../shared/stages.sh \
    --encoder whisper_tiny_en_window10_25hz \
    --protocol loso_speaker \
    --nj 2 \
    --prep_opts "--n_sentences 11" \
    --sweep_layers "0 1 2 3 4" \
    "$@"
