"""Issue 15, case 8: the custom recipe's labels and folds: labels differing only in case, one-utterance speakers."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_custom_corpus import build_tree, csv_rows, write_csv

from cta_rnn.corpora.custom import prepare_custom


def test_labels_differing_only_in_case_are_refused_naming_them(tmp_path: Path) -> None:
    rows = csv_rows(build_tree(tmp_path))
    for r in rows:
        if r["speaker"] in ("ann", "bob") and r["emotion"].strip() == "calm":
            r["emotion"] = "Calm"
    csv = write_csv(tmp_path, rows)
    with pytest.raises(ValueError, match=r"labels that differ only in case would be separate classes: 'Calm' / 'calm'"):
        prepare_custom(csv, log=lambda s: None)
    warnings: list[str] = []
    m = prepare_custom(csv, allow_partial=True, log=warnings.append)
    assert {"Calm", "calm"} <= set(m["emotion"]) and any("'Calm' / 'calm'" in w for w in warnings)


def test_a_speaker_with_one_utterance_is_warned_about(tmp_path: Path) -> None:
    tree = build_tree(tmp_path)
    rows = csv_rows(tree, split=False)
    rows[0].update(speaker="eve", session="s4")
    warnings: list[str] = []
    prepare_custom(write_csv(tmp_path, rows), log=warnings.append)
    small = [w for w in warnings if "fewer utterances than labels" in w]
    assert len(small) == 1 and "'eve' (1)" in small[0] and "test or validation sets are that small" in small[0]
    warnings.clear()
    prepare_custom(write_csv(tmp_path, csv_rows(tree, split=False)), log=warnings.append)
    assert not [w for w in warnings if w.startswith("WARNING")]
