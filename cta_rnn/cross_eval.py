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
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import torch

from cta_rnn.artifacts import encoder_differences, read_manifest, write_label_encoder, write_predictions
from cta_rnn.checkpoint import load_fold_model
from cta_rnn.io_utils import atomic_write_text
from cta_rnn.store import EmbeddingStore, StoreMismatchError

logger = logging.getLogger("cta_rnn.cross_eval")


def test_on_target(
    model: torch.nn.Module,
    spec: dict,
    store: EmbeddingStore,
    rows: pd.DataFrame,
    device: str = "cpu",
    batch_size: int = 16,
    cache: str = "auto",
) -> pd.DataFrame:
    """Predictions of a trained model on target utterances, through the test path of training (EmotionBrain).

    Speaker-normalised models get the target speakers' own statistics (no labels used), as in training.
    """
    from cta_rnn.brain import EmotionBrain
    from cta_rnn.data import eval_loader, speaker_stats
    from cta_rnn.feature_cache import FeatureSource

    source = FeatureSource(store, rows["ID"].tolist(), device, cache)
    if model.normalizer.mode == "speaker":
        model.normalizer.set_speakers(speaker_stats(source, rows, 200))
    loader = eval_loader(source, rows, spec["labels"], model.normalizer, batch_size)
    brain = EmotionBrain(
        modules={"model": model},
        hparams={"labels": spec["labels"], "layer_ids": spec["layers"]},
        run_opts={"device": device},
    )
    brain.evaluate(loader, progressbar=False)
    return brain.predictions_frame()


def cross_evaluate(
    source_exp: Path, manifest: pd.DataFrame, store_dir: Path, out: Path, force: bool = False, device: str = "cpu"
) -> int:
    """Test every finished source fold model on the target; returns how many folds were (re)computed."""
    folds = sorted(p for p in source_exp.glob("fold*") if (p / "model.json").is_file())
    if not folds:
        raise FileNotFoundError(f"{source_exp}: no trained fold (fold*/model.json); train the source recipe first")
    done = 0
    for fold in folds:
        dest = out / fold.name
        if (dest / "predictions.csv").exists() and not force:
            logger.info("%s exists: skipping", dest / "predictions.csv")
            continue
        model, spec = load_fold_model(fold, device)
        store = EmbeddingStore(store_dir, layers=spec["layers"])
        diffs = encoder_differences(spec.get("encoder"), store.meta.get("encoder"))
        if diffs:
            raise StoreMismatchError(
                f"{store_dir}: target store encoder differs from the source models' ({'; '.join(diffs)})"
            )
        unknown = sorted(set(manifest["emotion"].astype(str)) - set(spec["labels"]))
        if unknown:
            raise ValueError(f"target labels {unknown} are not in the source label set {spec['labels']}")
        rows = manifest[manifest["ID"].isin(store.index.keys())].reset_index(drop=True)
        frame = test_on_target(model, spec, store, rows, device)
        write_label_encoder(dest / "label_encoder.txt", spec["labels"])
        write_predictions(dest, frame)
        logger.info("%s: %d target utterances -> %s", fold.name, len(frame), dest / "predictions.csv")
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
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--summary", default=None, help="also write this Markdown table (both directions + within)")
    p.add_argument("--corpora", default="IEMOCAP,MSP-IMPROV", help="recipes in the summary table")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    manifest = read_manifest(args.target_manifest, required=("ID", "emotion", "speaker"))
    cross_evaluate(args.source_exp, manifest, args.target_store, args.out, args.force, args.device)
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
