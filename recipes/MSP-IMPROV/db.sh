#!/usr/bin/env bash
# Where the corpus lives. Set it here, or export MSP_IMPROV_ROOT before ./run.sh, or put the line in
# db.local.sh (git-ignored). The MSP-IMPROV folder (Evaluation.txt and Audio/session1..6 inside).
MSP_IMPROV_ROOT="${MSP_IMPROV_ROOT:-}"
if [ -f db.local.sh ]; then . ./db.local.sh; fi
