"""Correctness of the device paths, end to end on one device (run by ``benchmarks/gpu_check.sh``; works on a CPU).

    python benchmarks/gpu_checks.py e2e   --device cuda [--n 48] [--tmp DIR]
    python benchmarks/gpu_checks.py wenet --device cuda [--fixture ../shared/fixtures/wenet_u2pp_tiny]

``e2e``: synthetic clips whose class is a pitch band, a random-weight Whisper of tiny shape (no hub needed);
stage 1 on ``--device`` (float16 autocast on CUDA) against stage 1 on the CPU in float32 (per-layer relative
error and cosine); stage 2 on ``--device`` in every cache mode (gpu, ram, stream; same seed, same planned
batches) with their predictions compared; then ``EmotionRecognizer.classify_file`` and ``predict --adapt`` on
``--device``. ``wenet``: the WeNet U2++ fixture's layers on ``--device`` in float32, float16 and bfloat16
autocast against the reference WeNet's own code computed (relative to the output's magnitude).

Every check prints ``RESULT name key=value ...``; a check that fails its bound prints ``FAIL`` and the script
exits 1 (any exception exits non-zero too).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import soundfile as sf  # noqa: E402
import torch  # noqa: E402

LABELS = ["neu", "hap", "ang", "sad"]
FAILURES: list[str] = []


def result(name: str, ok: bool, **values: object) -> None:
    """One ``RESULT`` line; a failed bound is remembered for the exit status."""
    fields = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())
    print(f"RESULT {name} {fields} {'ok' if ok else 'FAIL'}", flush=True)
    if not ok:
        FAILURES.append(name)


def synthetic_fold(folder: Path, n: int, seed: int = 0) -> pd.DataFrame:
    """``n`` clips of 1-3 s whose label is the pitch band of a tone (4 speakers), written as 16-kHz wavs."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        label = i % 4
        dur = float(rng.uniform(1.0, 3.0))
        t = np.arange(int(16000 * dur)) / 16000
        f0 = 120 * 1.6**label * (1 + 0.05 * rng.standard_normal())
        wav = 0.3 * np.sin(2 * np.pi * f0 * t) * (1 + 0.3 * np.sin(3 * t)) + 0.01 * rng.standard_normal(t.size)
        path = folder / f"clip{i:04d}.wav"
        sf.write(path, wav.astype(np.float32), 16000)
        spk = i // 4 % 4
        rows.append(
            {
                "ID": f"clip{i:04d}",
                "wav": str(path),
                "duration": t.size / 16000,
                "emotion": LABELS[label],
                "speaker": f"spk{spk}",
                "session": spk // 2 + 1,
                "gender": "FM"[spk % 2],
            }
        )
    return pd.DataFrame(rows)


def dump_store(manifest: pd.DataFrame, spec: dict, out: Path, device: str) -> Path:
    """Stage 1 of ``manifest`` with the encoder ``spec`` on ``device`` into a finished store."""
    from cta_rnn.dump import dump, maybe_finalize
    from cta_rnn.encoders import build_encoder

    encoder = build_encoder(spec, device=device)
    dump(manifest, encoder, out, device=device, num_workers=1)
    assert maybe_finalize(manifest, out, 1), f"{out}: the store did not finish"
    return out


def compare_stores(a: Path, b: Path, ids: list[str]) -> tuple[float, float]:
    """Greatest per-layer relative error (||a-b|| / ||b||) and least cosine over utterances and layers."""
    from cta_rnn.store import EmbeddingStore

    sa, sb = EmbeddingStore(a), EmbeddingStore(b)
    worst_rel, worst_cos = 0.0, 1.0
    for uid in ids:
        x, y = sa.get(uid).double(), sb.get(uid).double()
        for layer in range(x.shape[0]):
            d = (x[layer] - y[layer]).norm() / y[layer].norm().clamp_min(1e-12)
            c = torch.nn.functional.cosine_similarity(x[layer].flatten(), y[layer].flatten(), dim=0)
            worst_rel, worst_cos = max(worst_rel, float(d)), min(worst_cos, float(c))
    return worst_rel, worst_cos


def train(fold: Path, store: Path, out: Path, device: str, cache: str) -> subprocess.CompletedProcess:
    """``python -m cta_rnn.train`` of the fold on ``device`` with the cache mode ``cache``."""
    cmd = [
        sys.executable,
        "-m",
        "cta_rnn.train",
        str(ROOT / "recipes" / "shared" / "hparams" / "train.yaml"),
        f"--fold_dir={fold}",
        f"--store_dir={store}",
        f"--output_folder={out}",
        f"--device={device}",
        f"--cache={cache}",
        "--number_of_epochs=4",
        "--batch_size=8",
        "--normalization=speaker",
        "--average_checkpoints=2",
        "--model_kwargs={rnn_hidden: 32, attention_hidden: 16, classifier_hidden: 32}",
    ]
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    if p.returncode != 0:
        raise RuntimeError(f"training with cache={cache} failed:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return p


def check_e2e(args: argparse.Namespace) -> None:
    """Stage 1 on the device vs the CPU, stage 2 in every cache mode, inference and predict --adapt."""
    from bench_dump import random_whisper

    from cta_rnn.io_utils import atomic_to_csv

    device = torch.device(args.device)
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        tmp = Path(tmp)
        manifest = synthetic_fold(tmp / "wav", args.n)
        spec = random_whisper("tiny", tmp / "whisper")
        spec["input"] = "trimmed"  # 3-s clips: the padded 30-s window would be 90% of the CPU reference's work
        ids = manifest["ID"].tolist()
        dev_store = dump_store(manifest, spec, tmp / "store_dev", str(device))
        if device.type != "cpu":
            cpu_store = dump_store(manifest, {**spec, "dtype": "float32"}, tmp / "store_cpu", "cpu")
            rel, cos = compare_stores(dev_store, cpu_store, ids)
            # float16 autocast over 4 blocks: ~1e-3 relative per layer measured on real tiny.en (shared/gpu.md)
            result("dump_vs_cpu_fp32", rel < 1e-2 and cos > 0.9999, device=str(device), max_rel=rel, min_cos=cos)
        fold = tmp / "fold1"
        fold.mkdir()
        split = {"test": "spk0", "valid": "spk1"}
        for name, spk in split.items():
            atomic_to_csv(manifest[manifest.speaker == spk], fold / f"{name}.csv")
        atomic_to_csv(manifest[~manifest.speaker.isin(split.values())], fold / "train.csv")
        modes = (["gpu"] if device.type == "cuda" else []) + ["ram", "stream"]
        preds = {}
        for mode in modes:
            p = train(fold, dev_store, tmp / f"exp_{mode}", str(device), mode)
            assert f"feature cache: {mode}" in p.stdout + p.stderr, f"cache {mode} was not used"
            preds[mode] = pd.read_csv(tmp / f"exp_{mode}" / "predictions.csv")
            results = json.loads((tmp / f"exp_{mode}" / "test_results.json").read_text())
            result("train", True, device=str(device), cache=mode, test_UA=float(results["test"]["UA"]))
        probs = [c for c in preds[modes[0]].columns if c.startswith("prob_")]
        for mode in modes[1:]:
            diff = float(np.abs(preds[mode][probs].to_numpy() - preds[modes[0]][probs].to_numpy()).max())
            same = float((preds[mode]["predicted"] == preds[modes[0]]["predicted"]).mean())
            # same batches and seeds; cuDNN LSTM kernels may differ between runs in the last bits, 4 epochs amplify
            result("cache_modes_agree", diff < 0.05 and same >= 0.9, a=modes[0], b=mode, max_prob_diff=diff, same=same)
        check_inference(tmp / f"exp_{modes[0]}", manifest, str(device))


def check_inference(fold: Path, manifest: pd.DataFrame, device: str) -> None:
    """``EmotionRecognizer.classify_file`` on the device against the fold's test predictions, and predict --adapt."""
    from cta_rnn.inference import EmotionRecognizer

    rec = EmotionRecognizer.from_dir(fold, device=device)
    test = pd.read_csv(fold / "predictions.csv").head(4)
    wavs = manifest.set_index("ID").loc[test["ID"], "wav"].tolist()
    probs = [c for c in test.columns if c.startswith("prob_")]
    worst = 0.0
    for wav, row in zip(wavs, test.itertuples(), strict=True):
        out, _, _, _ = rec.classify_file(wav)
        worst = max(
            worst, float(np.abs(out.squeeze().cpu().numpy() - np.array([getattr(row, c) for c in probs])).max())
        )
    # the store holds float16 states; classify_file encodes afresh in the same dtype: float16 rounding only
    result("classify_file", worst < 0.05, device=device, max_prob_diff_to_test_predictions=worst)
    speaker_wavs = manifest[manifest.speaker == "spk0"]["wav"].tolist()
    p = subprocess.run(
        [sys.executable, "-m", "cta_rnn.cli", "predict", "--model", str(fold), "--device", device, "--adapt"]
        + speaker_wavs,
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    lines = [line for line in p.stdout.splitlines() if line.strip()]
    result("predict_adapt", p.returncode == 0 and len(lines) >= len(speaker_wavs), device=device, rc=p.returncode)
    if p.returncode != 0:
        print(p.stderr[-3000:])


def check_wenet(args: argparse.Namespace) -> None:
    """WeNet fixture layers on the device in float32/float16/bfloat16 against WeNet's own reference."""
    from cta_rnn.encoders.wenet import WenetLayerwiseEncoder

    fixture = Path(args.fixture)
    ref = torch.load(fixture / "reference.pt", weights_only=True)
    # bounds relative to the output norm: float32 over 12 blocks (cross-machine, see tests/test_wenet.py), and
    # the unit roundoff of float16 (2^-11) / bfloat16 (2^-8) times a depth factor of ~10 for autocast
    bounds = {"float32": 1e-4, "float16": 2e-2, "bfloat16": 1e-1}
    for dtype, bound in bounds.items():
        enc = WenetLayerwiseEncoder(str(fixture), device=args.device, dtype=dtype, layers="all")
        worst = 0.0
        for sig in ref["signals"]:
            wav = sig["wav"][None].to(args.device)
            hidden, frames = enc.encode(wav, torch.ones(1, device=args.device))
            got = hidden[0, :, : int(frames[0])].float().cpu()
            want = torch.stack(list(sig["layers"])).float()
            n = min(got.shape[1], want.shape[1])
            for layer in range(want.shape[0]):
                d = (got[layer, :n] - want[layer, :n]).norm() / want[layer, :n].norm().clamp_min(1e-12)
                worst = max(worst, float(d))
        result("wenet_vs_reference", worst < bound, device=args.device, dtype=dtype, max_rel=worst, bound=bound)


def main() -> int:
    """Command line."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("check", choices=["e2e", "wenet"])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--n", type=int, default=48, help="synthetic clips of the e2e check (4 speakers)")
    p.add_argument("--tmp", default=None)
    p.add_argument("--fixture", default=str(ROOT.parent / "shared" / "fixtures" / "wenet_u2pp_tiny"))
    args = p.parse_args()
    {"e2e": check_e2e, "wenet": check_wenet}[args.check](args)
    if FAILURES:
        print(f"FAILED checks: {', '.join(FAILURES)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
