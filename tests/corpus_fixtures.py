"""Builders of fixture trees laid out exactly like IEMOCAP_full_release and MSP-IMPROV (tiny audio, real counts)."""

from __future__ import annotations

import io
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import soundfile as sf

from cta_rnn import EMOTIONS
from cta_rnn.corpora.expected_counts import (
    IEMOCAP_RAW_HAP_EXC,
    IEMOCAP_SPEAKER_COUNTS,
    MSP_IMPROV_CONDITION_COUNTS,
    MSP_IMPROV_SESSION_COUNTS,
)

DROPPED_IEMOCAP = ("fru", "sur", "fea", "dis", "oth", "xxx")
MSP_LETTER = {"ang": "A", "hap": "H", "sad": "S", "neu": "N"}
MSP_OX_PER_CONDITION = {"T": (1, 11), "R": (3, 39), "S": (70, 371), "P": (11, 134)}
"""(O, X) turns per condition in the real corpus: with the kept ones they make 8438 turns."""


def wav_bytes(sr: int = 16000, seconds: float = 0.05, seed: int = 0) -> bytes:
    """A short PCM16 mono wav of low noise, as bytes (written once, copied per utterance)."""
    x = np.random.default_rng(seed).normal(0, 0.01, int(sr * seconds)).astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, x, sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()


# ----------------------------------------------------------------------------------------------- IEMOCAP
def iemocap_dialogs(session: int) -> list[str]:
    """Realistic dialog names of one session, both leads, with the odd ones (impro05a, script01_1b, ...)."""
    out = []
    for lead in "FM":
        impro = ["impro01", "impro02", "impro03", "impro04", "impro05", "impro06", "impro07", "impro08"]
        script = ["script01_1", "script01_2", "script01_3", "script02_1", "script02_2", "script03_1", "script03_2"]
        if session == 3 and lead == "M":
            impro = impro[:4] + ["impro05a", "impro05b", "impro06", "impro07", "impro08a", "impro08b"]
        if session == 5 and lead == "M":
            script[0] = "script01_1b"
        out += [f"Ses{session:02d}{lead}_{d}" for d in impro + script]
    return out


def _label_block(start: float, utt: str, code: str, i: int) -> str:
    """One label line with its per-annotator lines and the trailing blank line."""
    end = start + 1.2345
    return (
        f"[{start:.4f} - {end:.4f}]\t{utt}\t{code}\t[2.5000, {2 + i % 3:.4f}, 3.0000]\n"
        f"C-E2:\tNeutral;\t()\nC-E3:\tFrustration; Anger;\t(mildly annoyed)\nC-F1:\tNeutral;\t()\n"
        f"A-E3:\tval 3; act 2; dom  2;\t()\nA-F1:\tval 2; act 3; dom  3;\t()\n\n"
    )


def build_iemocap(
    tmp: Path,
    speaker_counts: Mapping[str, Mapping[str, int]] | None = None,
    sessions: tuple[int, ...] = (1, 2, 3, 4, 5),
    extras_per_dialog: int = 6,
) -> Path:
    """An ``IEMOCAP_full_release`` tree under ``tmp`` with exactly ``speaker_counts`` kept utterances
    (default: paper.md), ``extras_per_dialog`` dropped-code utterances per dialog, decoy files; returns its root.
    """
    counts = speaker_counts or IEMOCAP_SPEAKER_COUNTS
    root = tmp / "IEMOCAP_full_release"
    audio = wav_bytes()
    n_happy = 0
    hap_share = IEMOCAP_RAW_HAP_EXC["hap"] / sum(IEMOCAP_RAW_HAP_EXC.values())
    for s in sessions:
        dialogs = iemocap_dialogs(s)
        per_dialog: dict[str, list[tuple[str, str]]] = {d: [] for d in dialogs}
        k = 0
        for gender in "FM":
            for emo in EMOTIONS:
                for _ in range(counts.get(f"Ses{s:02d}{gender}", {}).get(emo, 0)):
                    code = emo
                    if emo == "hap":  # hap 595 + exc 1041 spread evenly over the happy utterances
                        code = "hap" if int((n_happy + 1) * hap_share) != int(n_happy * hap_share) else "exc"
                        n_happy += 1
                    per_dialog[dialogs[k % len(dialogs)]].append((gender, code))
                    k += 1
        for j, d in enumerate(dialogs):
            per_dialog[d] += [("FM"[(i + j) % 2], DROPPED_IEMOCAP[(i + j) % 6]) for i in range(extras_per_dialog)]
            _write_iemocap_dialog(root / f"Session{s}", d, per_dialog[d], audio, latin1=(j == 3))
    return root


def _write_iemocap_dialog(sess: Path, dialog: str, utts: list[tuple[str, str]], audio: bytes, latin1: bool) -> None:
    """Label file (+ decoys), transcription and wavs of one dialog."""
    emo_dir, wav_dir = sess / "dialog" / "EmoEvaluation", sess / "sentences" / "wav" / dialog
    for sub in ("Categorical", "Attribute", "Self-evaluation"):
        (emo_dir / sub).mkdir(parents=True, exist_ok=True)
    wav_dir.mkdir(parents=True, exist_ok=True)
    (sess / "dialog" / "transcriptions").mkdir(parents=True, exist_ok=True)
    turns = {"F": 0, "M": 0}
    label = "% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]\n\n"
    trans = [f"{dialog}_MXX0 [000.0000-001.0000]: [LAUGHTER]", "M: [BREATHING]"]
    for i, (g, code) in enumerate(utts):
        utt = f"{dialog}_{g}{turns[g]:03d}"
        turns[g] += 1
        label += _label_block(2.0 * i + 0.5, utt, code, i)
        if i % 17 != 5:  # a few utterances lack a transcript line
            trans.append(f"{utt} [{2.0 * i + 0.5:08.4f}-{2.0 * i + 1.7:08.4f}]: Line {i} of {dialog}, said by {g}.")
        if code not in DROPPED_IEMOCAP or i % 5:
            (wav_dir / f"{utt}.wav").write_bytes(audio)
    if latin1:
        label = label.replace("(mildly annoyed)", "(caf\u00e9 scene)", 1)
    (emo_dir / f"{dialog}.txt").write_bytes(label.encode("latin-1" if latin1 else "ascii"))
    (emo_dir / f"._{dialog}.txt").write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        \xff\xfe")
    decoy = f"[1.0000 - 2.0000]\t{dialog}_F999\tang\t[1.0000, 4.0000, 4.0000]\n"
    (emo_dir / "Categorical" / f"{dialog}_e2_cat.txt").write_text(f"{dialog}_F000 :Neutral state; ()\n" + decoy)
    (emo_dir / "Attribute" / f"{dialog}_e3_atr.txt").write_text(f"{dialog}_F000 :val 3; act 2; dom 2; ()\n" + decoy)
    (emo_dir / "Self-evaluation" / f"{dialog}.txt").write_text(decoy)
    if not dialog.endswith("impro02"):  # one dialog per lead has no transcription file at all
        (sess / "dialog" / "transcriptions" / f"{dialog}.txt").write_text("\n".join(trans) + "\n")


# ----------------------------------------------------------------------------------------------- MSP-IMPROV
Cells = dict[tuple[int, str, str], int]
"""(session, condition letter, emotion) -> number of kept utterances."""


def msp_cells_full() -> Cells:
    """Per class, conditions spread over sessions in proportion (every session has every condition), rounded so
    that the cells sum EXACTLY to both published tables (floors, then a north-west corner on the remainders)."""
    cells: Cells = {}
    for emo in EMOTIONS:
        sess = {s: c[emo] for s, c in MSP_IMPROV_SESSION_COUNTS.items()}
        cond = {c: v[emo] for c, v in MSP_IMPROV_CONDITION_COUNTS.items()}
        total = sum(sess.values())
        assert total == sum(cond.values())
        for s, ns in sess.items():
            for c, nc in cond.items():
                cells[(s, c, emo)] = ns * nc // total
        row = {s: sess[s] - sum(cells[(s, c, emo)] for c in cond) for s in sess}
        col = {c: cond[c] - sum(cells[(s, c, emo)] for s in sess) for c in cond}
        for s in sess:
            for c in cond:
                n = min(row[s], col[c])
                cells[(s, c, emo)] += n
                row[s] -= n
                col[c] -= n
    return cells


def msp_cells_small(n: int = 1, sessions: tuple[int, ...] = (1, 2, 3, 4, 5, 6)) -> Cells:
    """``n`` utterances per (session, condition, emotion)."""
    return {(s, c, e): n for s in sessions for c in "TRSP" for e in EMOTIONS}


def _msp_extras_full() -> dict[tuple[int, str, str], int]:
    """The O/X turns of the real corpus, spread over the sessions."""
    out: dict[tuple[int, str, str], int] = {}
    for c, (o, x) in MSP_OX_PER_CONDITION.items():
        for letter, n in (("O", o), ("X", x)):
            for i in range(n):
                key = (i % 6 + 1, c, letter)
                out[key] = out.get(key, 0) + 1
    return out


def _consensus(uid: str, letter: str, i: int) -> str:
    """A consensus line (NaN values and stray spaces now and then) followed by rater lines and a blank line."""
    d = "NaN" if i % 13 == 0 else "3.000000"
    sep = ";  " if i % 11 == 0 else "; "
    line = f"UTD-IMPROV-{uid}.avi{sep}{letter}; A:3.000000; V:3.500000; D:{d} ; N:{'NaN' if i % 29 == 0 else '3.0'};"
    raters = [
        f"rater-{i % 50:02d}; Neutral; Neutral,Happy; A:3.000000; V:3.000000; D:{d}; N:3.000000;",
        f"F, 1.1, {letter}, 2.0, NaN",
    ]
    return "\n".join([line, *raters[: 1 + i % 2], ""]) + "\n"


def build_msp_improv(
    tmp: Path,
    cells: Cells | None = None,
    extras: Mapping[tuple[int, str, str], int] | None = None,
    label_name: str = "Evaluation.txt",
    audio_level: bool = True,
    name: str = "MSP-IMPROV",
) -> Path:
    """An MSP-IMPROV tree under ``tmp/name``: ``cells`` kept utterances (default: both paper.md tables),
    ``extras`` O/X turns (default: the real 640), every 7th file at 48 kHz, a few transcripts; returns its root.
    """
    cells = msp_cells_full() if cells is None else cells
    extras = _msp_extras_full() if extras is None else extras
    root = tmp / name
    audio_dir = root / "Audio" if audio_level else root
    audio16, audio48 = wav_bytes(16000), wav_bytes(48000)
    counter: dict[tuple[int, str], int] = {}
    lines: list[str] = []
    todo = [(k, MSP_LETTER[k[2]], n) for k, n in cells.items()] + [(k, k[2], n) for k, n in extras.items()]
    for (s, c, _), letter, n in todo:
        for _ in range(n):
            k = counter.get((s, c), 0)
            counter[(s, c)] = k + 1
            sent = f"S{k % 15 + 1:02d}{'AHSN'[(k // 15) % 4]}"
            uid = f"{sent}-{'FM'[k % 2]}{s:02d}-{c}-{['FM', 'MF'][(k // 60) % 2]}{k // 120 + 1:02d}"
            folder = audio_dir / f"session{s}" / sent / c
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"MSP-IMPROV-{uid}.wav").write_bytes(audio48 if len(lines) % 7 == 3 else audio16)
            lines.append(_consensus(uid, letter, len(lines)))
            if len(lines) % 97 == 1:
                tdir = root / "All_human_transcriptions"
                tdir.mkdir(parents=True, exist_ok=True)
                (tdir / f"MSP-IMPROV-{uid}.txt").write_text(f"  transcript of {uid}\n")
    (root / label_name).write_text("".join(lines))
    return root


# ----------------------------------------------------------------------------------------------- hand-written labels
def build_iemocap_from_labels(tmp: Path, dialog: str, label_text: str) -> Path:
    """A one-dialog IEMOCAP tree under ``tmp`` whose EmoEvaluation file is ``label_text`` verbatim, with a wav for
    every utterance of its ``[start - end] UTT ...`` lines; returns its root."""
    root = tmp / "IEMOCAP_full_release"
    sess = root / f"Session{int(dialog[3:5])}"
    emo_dir, wav_dir = sess / "dialog" / "EmoEvaluation", sess / "sentences" / "wav" / dialog
    emo_dir.mkdir(parents=True, exist_ok=True)
    wav_dir.mkdir(parents=True, exist_ok=True)
    (emo_dir / f"{dialog}.txt").write_text(label_text)
    audio = wav_bytes()
    for utt in re.findall(r"^\[[^\]]*\]\s+(\S+)", label_text, flags=re.M):
        (wav_dir / f"{utt}.wav").write_bytes(audio)
    return root


def build_msp_from_evaluation(tmp: Path, evaluation: str) -> Path:
    """An MSP-IMPROV tree under ``tmp`` whose Evaluation.txt is ``evaluation`` verbatim, with a wav for every
    consensus line's id; returns its root."""
    root = tmp / "MSP-IMPROV"
    root.mkdir(parents=True, exist_ok=True)
    (root / "Evaluation.txt").write_text(evaluation)
    audio = wav_bytes()
    for uid in re.findall(r"^\s*UTD-IMPROV-([^.;\s]+)\.avi", evaluation, flags=re.M):
        folder = root / "Audio" / f"session{int(uid.split('-')[1][1:])}" / uid[:4] / uid.split("-")[2]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"MSP-IMPROV-{uid}.wav").write_bytes(audio)
    return root
