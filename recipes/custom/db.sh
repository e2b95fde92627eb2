#!/usr/bin/env bash
# Where your corpus lives: set one of these here, export it before ./run.sh, or put the line in db.local.sh
# (git-ignored). CORPUS_CSV wins when both are set.
#   CORPUS_CSV  a CSV with columns path, emotion, speaker [, session, text, split, gender]
#               (paths relative to the CSV's folder, or absolute)
#   CORPUS_DIR  a folder <emotion>/<speaker>_<anything>.wav (.flac, .ogg too)
CORPUS_CSV="${CORPUS_CSV:-}"
CORPUS_DIR="${CORPUS_DIR:-}"
if [ -f db.local.sh ]; then . ./db.local.sh; fi
