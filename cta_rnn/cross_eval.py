"""Cross-corpus testing: every fold model of a source experiment on all utterances of a target corpus.

    python -m cta_rnn.cross_eval --source_exp ../IEMOCAP/exp/cta_rnn_whisper_tiny_en_loso_speaker \
        --target_manifest ../MSP-IMPROV/data/manifest.csv --target_store ../MSP-IMPROV/dump/whisper_tiny_en \
        --out exp/IEMOCAP_to_MSP-IMPROV_cta_rnn_whisper_tiny_en_loso_speaker

Writes ``<out>/fold<k>/predictions.csv`` per source fold model (finished ones are skipped), then scores
``<out>`` like stage 3 (mean +- std over the fold models). The target store must come from the same
encoder and layers as the source models (checked).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import torch
from tqdm import tqdm

from cta_rnn.brain import predictions_frame
from cta_rnn.checkpoint import load_fold_model
from cta_rnn.data import normalise, speaker_stats
from cta_rnn.io_utils import atomic_to_csv, atomic_write_text, read_manifest
from cta_rnn.store import EmbeddingStore, StoreMismatchError

logger = logging.getLogger("cta_rnn.cross_eval")
IDENTITY = ("backend", "source", "revision", "input", "name")


def check_same_encoder(source: dict, target: dict, where: str) -> None:
    """Refuse a target store made by another encoder than the source models saw."""
    diffs = [f"{k}: {source.get(k)!r} vs {target.get(k)!r}" for k in IDENTITY if source.get(k) != target.get(k)]
    if diffs:
        raise StoreMismatchError(f"{where}: target store encoder differs from the source models' ({'; '.join(diffs)})")


@torch.no_grad()
def predict_ids(
    model: torch.nn.Module,
    store: EmbeddingStore,
    ids: Sequence[str],
    batch_size: int = 16,
    spk_of: dict[str, str] | None = None,
    spk_stats: dict | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Probabilities (N, C) and channel attention (N, L) for store utterances, batched by length."""
    order = sorted(range(len(ids)), key=lambda i: store.frames(ids[i]))
    probs = torch.zeros(len(ids), model.num_classes)
    chan = torch.zeros(len(ids), model.num_layers)
    for b in tqdm(range(0, len(order), batch_size), desc="predict", disable=None, file=sys.stderr):
        idx = order[b : b + batch_size]
        feats = []
        for i in idx:
            x = store.get(ids[i])
            if spk_stats is not None:
                x = normalise(x, *spk_stats[spk_of[ids[i]]])
            feats.append(x)
        longest = max(x.shape[1] for x in feats)
        batch = torch.zeros(len(feats), feats[0].shape[0], longest, feats[0].shape[2])
        for j, x in enumerate(feats):
            batch[j, :, : x.shape[1]] = x
        lengths = torch.tensor([x.shape[1] / longest for x in feats])
        logits, att = model(batch, lengths, return_attention=True)
        probs[idx] = torch.softmax(logits, -1)
        chan[idx] = att["channel"]
    return probs, chan


def cross_evaluate(source_exp: Path, manifest: pd.DataFrame, store_dir: Path, out: Path, force: bool = False) -> int:
    """Test every finished source fold model on the target; returns how many folds were (re)computed."""
    folds = sorted(p for p in source_exp.glob("fold*") if (p / "model.json").is_file())
    if not folds:
        raise FileNotFoundError(f"{source_exp}: no trained fold (fold*/model.json); train the source recipe first")
    done = 0
    for fold in folds:
        dest = out / fold.name / "predictions.csv"
        if dest.exists() and not force:
            logger.info("%s exists: skipping", dest)
            continue
        model, spec = load_fold_model(fold)
        store = EmbeddingStore(store_dir, layers=spec["layers"])
        check_same_encoder(spec["encoder"] or {}, store.meta.get("encoder") or {}, str(store_dir))
        unknown = sorted(set(manifest["emotion"].astype(str)) - set(spec["labels"]))
        if unknown:
            raise ValueError(f"target labels {unknown} are not in the source label set {spec['labels']}")
        rows = manifest[manifest["ID"].isin(store.index.keys())]
        stats = speaker_stats(store, rows) if spec["normalization"] == "speaker" else None
        spk_of = dict(zip(rows["ID"], rows["speaker"].astype(str)))
        probs, chan = predict_ids(model, store, rows["ID"].tolist(), spk_of=spk_of, spk_stats=stats)
        frame = predictions_frame(
            rows["ID"], rows["emotion"], probs.numpy(), chan.numpy(), spec["labels"], spec["layers"]
        )
        (out / fold.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(fold / "label_encoder.txt", out / fold.name / "label_encoder.txt")
        atomic_to_csv(frame, dest)
        logger.info("%s: %d target utterances -> %s", fold.name, len(frame), dest)
        done += 1
    return done


def summary_table(recipes_dir: Path, cross_dir: Path, exp_name: str, corpora: Sequence[str]) -> str:
    """Markdown: train corpus x test corpus, within-corpus from each recipe, cross-corpus from ``cross_dir``."""
    from cta_rnn.results_md import fmt_pct

    lines = [
        f"Experiment `{exp_name}`: mean +- std over fold models (within: held-out folds; cross: all of the target).",
        "",
        "| train | test | kind | folds | WA (%) | UA (%) | F1 (%) |",
        "|---|---|---|---|---|---|---|",
    ]
    for src in corpora:
        for tgt in corpora:
            within = src == tgt
            path = recipes_dir / src / "exp" / exp_name if within else cross_dir / f"{src}_to_{tgt}_{exp_name}"
            res_file = path / "results.json"
            if not res_file.is_file():
                lines.append(f"| {src} | {tgt} | {'within' if within else 'cross'} | - | - | - | - |")
                continue
            res = json.loads(res_file.read_text(encoding="utf-8"))
            ms = res["mean_std"]
            cells = [fmt_pct(ms[k]["mean"], ms[k]["std"]) for k in ("wa", "ua", "macro_f1")]
            kind = "within" if within else "cross"
            lines.append(f"| {src} | {tgt} | {kind} | {len(res['folds_scored'])} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m cta_rnn.cross_eval``."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source_exp", required=True, type=Path, help="source experiment folder with fold*/")
    p.add_argument("--target_manifest", required=True, type=Path)
    p.add_argument("--target_store", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--recipe_root", type=Path, default=Path("."), help="where RESULTS.md is collected")
    p.add_argument("--force", action="store_true")
    p.add_argument("--summary", default=None, help="also write this Markdown table (both directions + within)")
    p.add_argument("--corpora", default="IEMOCAP,MSP-IMPROV", help="recipes in the summary table")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    manifest = read_manifest(args.target_manifest, required=("ID", "emotion", "speaker"))
    cross_evaluate(args.source_exp, manifest, args.target_store, args.out, args.force)
    from cta_rnn.score import main as score_main

    rc = score_main(["--exp", str(args.out), "--recipe_root", str(args.recipe_root)])
    if args.summary:
        exp_name = args.source_exp.name
        recipes_dir = args.source_exp.resolve().parents[2]
        table = summary_table(recipes_dir, args.out.parent, exp_name, args.corpora.split(","))
        atomic_write_text(args.summary, table)
        print(table)
    return rc


if __name__ == "__main__":
    sys.exit(main())
