"""The ``cta-rnn`` console script: one entry point for every stage, and the commands that use a trained model
(``predict``, ``export``, ``timeline``: in :mod:`cta_rnn.commands`). Each command's module is imported only when
it runs, so ``cta-rnn --help`` starts without torch.

cta-rnn prepare {iemocap,msp_improv,manifest} --root ROOT --out data/     stage 0
cta-rnn dump --manifest data/manifest.csv --encoder ENC.yaml --out dump/X  stage 1
cta-rnn train hparams/train.yaml --fold_dir=... --store_dir=... ...       stage 2
cta-rnn score --exp exp/<experiment>                                       stage 3
cta-rnn cross-eval --source_exp ... --target_manifest ... --target_store ... --out ...
cta-rnn mini-corpus --out data/mini_corpus                                 synthesise the mini corpus
cta-rnn predict --model M a.wav ... / cta-rnn export M out/                 use a trained model
cta-rnn timeline --model M long.wav [--rttm diar.rttm] / --live -          emotion over time
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

COMMANDS = {
    "prepare": "cta_rnn.prepare",
    "dump": "cta_rnn.dump",
    "train": "cta_rnn.train",
    "score": "cta_rnn.score",
    "cross-eval": "cta_rnn.cross_eval",
    "mini-corpus": "cta_rnn.corpora.mini",
    "predict": "cta_rnn.commands:main_predict",
    "export": "cta_rnn.commands:main_export",
    "timeline": "cta_rnn.commands:main_timeline",
}


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch ``cta-rnn <command> ...`` to the command's module ``main``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if args else 2
    command, rest = args[0], args[1:]
    if command not in COMMANDS:
        print(f"cta-rnn: unknown command {command!r}; choose from {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    module_name, _, func = COMMANDS[command].partition(":")
    module = importlib.import_module(module_name)
    sys.argv = [f"cta-rnn {command}", *rest]
    return int(getattr(module, func or "main")(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
