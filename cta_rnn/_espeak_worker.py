"""Helper process for :mod:`cta_rnn.tts` (standard library only): libespeak-ng behind a fork-per-request loop.

libespeak-ng keeps hidden state between utterances (pitch-flutter phase, gain control, echo buffer), so
the same text spoken twice in one process differs slightly. This process initialises the library once
and forks a child for every request: each utterance starts from the identical freshly initialised
state, so output depends only on the request. Protocol on stdin/stdout: one JSON request per line;
each answer (and a first hello carrying the sample rate) is ``<status int32><length uint32><payload>``,
little-endian; status 0 = int16 PCM (or text for the hello), 2 = voice not found, 1 = other error.
"""

from __future__ import annotations

import ctypes
import json
import os
import struct
import sys

AUDIO_OUTPUT_SYNCHRONOUS, INITIALIZE_DONT_EXIT = 2, 0x8000
POS_CHARACTER, CHARS_UTF8, SSML = 1, 0x1, 0x10
EE_OK, EE_NOT_FOUND = 0, 2
CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


def write_all(fd: int, status: int, payload: bytes) -> None:
    """Write one framed answer to ``fd``."""
    data = struct.pack("<iI", status, len(payload)) + payload
    while data:
        data = data[os.write(fd, data) :]


def load(lib_path: str, data_parent: str) -> tuple[ctypes.CDLL, int]:
    """Load and initialise libespeak-ng in synchronous mode; returns the library and its sample rate."""
    lib = ctypes.CDLL(lib_path)
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_Synth.argtypes = [
        ctypes.c_void_p,
        ctypes.c_size_t,
        ctypes.c_uint,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.c_uint,
        ctypes.c_void_p,
        ctypes.c_void_p,
    ]
    rate = lib.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, data_parent.encode(), INITIALIZE_DONT_EXIT)
    if rate <= 0:
        raise RuntimeError(f"espeak_Initialize failed ({rate}) with data under {data_parent}")
    return lib, rate


def speak(lib: ctypes.CDLL, req: dict) -> tuple[int, bytes]:
    """Run one request in the (forked) child: set voice and parameters, synthesise, return PCM bytes."""
    chunks: list[bytes] = []

    def collect(wav: ctypes.POINTER(ctypes.c_short), n: int, _events: int) -> int:
        if n > 0 and wav:
            chunks.append(ctypes.string_at(wav, 2 * n))
        return 0

    callback = CALLBACK(collect)
    lib.espeak_SetSynthCallback(callback)
    err = lib.espeak_SetVoiceByName(req["voice"].encode())
    if err != EE_OK:
        return (2 if err == EE_NOT_FOUND else 1), f"espeak_SetVoiceByName({req['voice']!r}) -> {err}".encode()
    if req.get("check_only"):
        return 0, b""
    for key, value in req["params"]:
        lib.espeak_SetParameter(int(key), int(value), 0)
    if hasattr(lib, "espeak_ng_SetRandSeed"):
        lib.espeak_ng_SetRandSeed(ctypes.c_long(0))
    ctypes.CDLL(None).srand(0)
    text = req["ssml"].encode("utf-8") + b"\0"
    err = lib.espeak_Synth(text, len(text), 0, POS_CHARACTER, 0, CHARS_UTF8 | SSML, None, None)
    lib.espeak_Synchronize()
    if err != EE_OK:
        return 1, f"espeak_Synth -> {err}".encode()
    return 0, b"".join(chunks)


def serve(lib: ctypes.CDLL) -> None:
    """Answer requests from stdin until EOF, one forked child per request."""
    for line in sys.stdin.buffer:
        if not line.strip():
            continue
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: speak from the pristine state, answer, leave without cleanup
            os.close(r)
            try:
                status, payload = speak(lib, json.loads(line))
            except BaseException as e:  # noqa: BLE001 - everything goes back to the client
                status, payload = 1, repr(e).encode()
            write_all(w, status, payload)
            os._exit(0)
        os.close(w)
        with os.fdopen(r, "rb") as f:
            answer = f.read()
        _, code = os.waitpid(pid, 0)
        if code != 0 or len(answer) < 8:
            write_all(1, 1, f"espeak child failed (wait status {code})".encode())
        else:
            while answer:
                answer = answer[os.write(1, answer) :]


def main() -> None:
    """Entry point: ``python _espeak_worker.py LIBRARY DATA_PARENT``."""
    try:
        lib, rate = load(sys.argv[1], sys.argv[2])
    except Exception as e:  # noqa: BLE001
        write_all(1, 1, repr(e).encode())
        return
    write_all(1, 0, str(rate).encode())
    serve(lib)


if __name__ == "__main__":
    main()
