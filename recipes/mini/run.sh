#!/usr/bin/env bash
# mini: the embedded default recipe. A small emotional-speech corpus synthesised offline with
# espeak-ng (10 voices = 5 sessions x F/M, 4 prosodic "emotions"), encoded with the embedded
# Whisper tiny.en, CTA-RNN trained on a few leave-one-speaker-out folds, scored. CPU, minutes.
#
#   ./run.sh                               stages 0-3 with the defaults below
#   ./run.sh --stage 2 --folds 1-10        more folds; any option of ../shared/stages.sh --help
#   ./run.sh --stage 4 --stop_stage 4      ablations (no CA, no TA, last layer, SUPERB) + layer sweep
#   ./run.sh --stage 2 -- --lr=0.0005      hyperpyyaml overrides after --
set -euo pipefail
cd "$(dirname "$0")"
exec ../shared/stages.sh \
    --encoder whisper_tiny_en \
    --protocol loso_speaker \
    --folds "1,4,7" \
    --nj 2 \
    --prep_opts "--n_sentences 11" \
    --sweep_layers "0 1 2 3 4" \
    "$@"
