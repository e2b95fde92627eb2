#!/usr/bin/env bash
# Stage 0 for IEMOCAP: IEMOCAP_full_release -> data/manifest.csv + data/folds/{loso_session,loso_speaker}.
#   local/data_prep.sh <IEMOCAP_ROOT> <data_dir> [--allow_partial] [--conditions impro|script]
set -euo pipefail
root="${1:-}"; data_dir="$2"; shift 2
[ -n "${root}" ] || { echo "IEMOCAP_ROOT is not set: edit db.sh or export IEMOCAP_ROOT=/path/to/IEMOCAP_full_release" >&2; exit 1; }
python="${python:-}"  # exported by ../shared/stages.sh
if [ -z "${python}" ]; then if [ -x ../../.venv/bin/python ]; then python=../../.venv/bin/python; else python=python3; fi; fi
exec "${python}" -m cta_rnn.prepare iemocap --root "${root}" --out "${data_dir}" "$@"
