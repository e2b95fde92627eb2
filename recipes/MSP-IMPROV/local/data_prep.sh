#!/usr/bin/env bash
# Stage 0 for MSP-IMPROV: the corpus root -> data/manifest.csv + data/folds/{loso_session,loso_speaker} (48 kHz audio is resampled by the dump).
#   local/data_prep.sh <MSP_IMPROV_ROOT> <data_dir> [--allow_partial] [--conditions T,R,S,P]
set -euo pipefail
root="${1:-}"; data_dir="$2"; shift 2
[ -n "${root}" ] || { echo "MSP_IMPROV_ROOT is not set: edit db.sh or export MSP_IMPROV_ROOT=/path/to/MSP-IMPROV" >&2; exit 1; }
python="${python:-}"  # exported by ../shared/stages.sh
if [ -z "${python}" ]; then if [ -x ../../.venv/bin/python ]; then python=../../.venv/bin/python; else python=python3; fi; fi
exec "${python}" -m cta_rnn.prepare msp_improv --root "${root}" --out "${data_dir}" "$@"
