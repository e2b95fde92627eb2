#!/usr/bin/env bash
# Where the corpus lives. Set it here, or export IEMOCAP_ROOT before ./run.sh, or put the line in
# db.local.sh (git-ignored). The folder is IEMOCAP_full_release (with Session1..Session5 inside).
IEMOCAP_ROOT="${IEMOCAP_ROOT:-}"
if [ -f db.local.sh ]; then . ./db.local.sh; fi
