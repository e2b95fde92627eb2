"""Corpus parsers (one file per corpus) producing the common manifest; folds.py holds the fold protocols."""
