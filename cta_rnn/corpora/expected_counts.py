"""Published class counts of IEMOCAP and MSP-IMPROV (the counts data prep must reproduce), as data."""

from __future__ import annotations

from cta_rnn import EMOTIONS


def _rows(table: dict[object, tuple[int, int, int, int]]) -> dict[object, dict[str, int]]:
    """Turn ``key -> (neu, hap, ang, sad)`` tuples into ``key -> {emotion: n}``."""
    return {k: dict(zip(EMOTIONS, v)) for k, v in table.items()}


# IEMOCAP_full_release, 4 classes (exc merged into hap), improvised + scripted: 5531 utterances.
IEMOCAP_CLASS_TOTALS = {"neu": 1708, "hap": 1636, "ang": 1103, "sad": 1084}
IEMOCAP_RAW_HAP_EXC = {"hap": 595, "exc": 1041}
"""Corpus-wide counts of the two codes merged into ``hap``."""
IEMOCAP_SESSION_COUNTS = _rows(
    {
        1: (384, 278, 229, 194),
        2: (362, 327, 137, 197),
        3: (320, 286, 240, 305),
        4: (258, 303, 327, 143),
        5: (384, 442, 170, 245),
    }
)
IEMOCAP_SPEAKER_COUNTS = _rows(
    {
        "Ses01F": (171, 132, 147, 78),
        "Ses01M": (213, 146, 82, 116),
        "Ses02F": (135, 166, 67, 113),
        "Ses02M": (227, 161, 70, 84),
        "Ses03F": (130, 128, 92, 172),
        "Ses03M": (190, 158, 148, 133),
        "Ses04F": (76, 185, 205, 62),
        "Ses04M": (182, 118, 122, 81),
        "Ses05F": (221, 159, 78, 132),
        "Ses05M": (163, 283, 92, 113),
    }
)

# MSP-IMPROV: 8438 labelled turns; A/H/S/N kept (O and X dropped): 7798 utterances.
MSP_IMPROV_TURNS = 8438
MSP_IMPROV_CLASS_TOTALS = {"neu": 3477, "hap": 2644, "ang": 792, "sad": 885}
MSP_IMPROV_SESSION_COUNTS = _rows(
    {
        1: (502, 181, 128, 105),
        2: (692, 401, 121, 115),
        3: (771, 577, 142, 132),
        4: (440, 424, 76, 111),
        5: (506, 581, 165, 156),
        6: (566, 480, 160, 266),
    }
)
MSP_IMPROV_CONDITION_COUNTS = _rows(
    {
        "T": (283, 136, 115, 106),  # target sentence, improvised
        "R": (241, 88, 169, 80),  # target sentence, read
        "S": (1789, 1048, 470, 633),  # other turns of the improvisation
        "P": (1164, 1372, 38, 66),  # natural interaction
    }
)
