"""The training YAML declares its hyperparameters: the [bracket] specs of its comments are the schema."""

from __future__ import annotations

from pathlib import Path

import pytest

from cta_rnn import hparams_schema as hs


@pytest.mark.parametrize(
    ("spec", "good", "bad", "expect"),
    [
        ("int >= 1", [1, 7], [0, 1.5, True, "3"], "an integer >= 1"),
        ("int", [-3, 0], [0.5, None], "an integer"),
        ("number > 0 < 1", [0.1, 0.99], [0, 1, float("nan"), False], "a number > 0 and < 1"),
        ("number >= 0", [0, 2.5], [-0.1, "1"], "a number >= 0"),
        ("null or number > 0", [None, 2.0], [0, "x"], "a number > 0 or null"),
        ("global | speaker | none", ["speaker"], ["speakr", None], "one of global | speaker | none"),
        ("bool", [True, False], [0, "yes"], "True or False"),
        ("labels", [["a", "b"]], [[], ["a", "a"]], "a non-empty list of distinct names"),
        ("layers", [None, [0, 2]], [[], [1, 1], ["0"]], "null (all layers) or a non-empty list of distinct layer"),
    ],
)
def test_bracket_specs_accept_what_they_say(spec: str, good: list, bad: list, expect: str) -> None:
    key = hs.parse_spec(spec)
    assert all(key.ok(v) for v in good) and not any(key.ok(v) for v in bad)
    assert key.expect.startswith(expect) and key.identity


def test_run_flag_marks_run_control() -> None:
    assert not hs.parse_spec("auto | gpu, run").identity and not hs.parse_spec("int >= 0, run").identity


@pytest.mark.parametrize("spec", ["float > 0", "int > 1", "number > x", "number >", "bool, quick"])
def test_an_unreadable_spec_names_the_file_and_line(tmp_path: Path, spec: str) -> None:
    yaml = tmp_path / "train.yaml"
    yaml.write_text(f"seed: 1  # [int]\n\nlr: 0.1  # [{spec}] learning rate\n")
    with pytest.raises(hs.HparamsError, match=rf"^{yaml}:3: "):
        hs.read_schema(yaml)


def test_a_new_key_is_one_yaml_line(tmp_path: Path) -> None:
    """The worked example of docs/hyperparameters.md: the YAML line alone declares and checks the key."""
    yaml = tmp_path / "train.yaml"
    yaml.write_text(hs.SHARED_TRAIN_YAML.read_text() + "warmup_epochs: 2  # [int >= 0] epochs of linear LR warm-up\n")
    schema = hs.read_schema(yaml)
    assert list(schema)[-1] == "warmup_epochs" and set(schema) - {"warmup_epochs"} == set(hs.SCHEMA)
    assert schema["warmup_epochs"].ok(0) and not schema["warmup_epochs"].ok(-1)


def test_the_shared_yaml_declares_every_plain_key() -> None:
    """Every top-level key of train.yaml that is not a hyperpyyaml object has a spec (so it is checked)."""
    text = hs.SHARED_TRAIN_YAML.read_text()
    objects = {k for k in hs.yaml_keys(hs.SHARED_TRAIN_YAML) if f"{k}: !new:" in text or f"{k}: !name:" in text}
    objects |= {k for k in hs.yaml_keys(hs.SHARED_TRAIN_YAML) if k.startswith("__")}
    assert hs.yaml_keys(hs.SHARED_TRAIN_YAML) - objects == set(hs.SCHEMA)
    assert {"early_stop_warmup", "task", "cache"} <= set(hs.SCHEMA) and "cache" not in hs.IDENTITY_KEYS
    with pytest.raises(hs.HparamsError, match="early_stop_warmup: expected an integer >= 0, got -1"):
        hs.check_overrides({"early_stop_warmup": -1})
