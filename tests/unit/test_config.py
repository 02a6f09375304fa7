"""Strict experiment configs: every mistake is named with its file, line, key path and a hint."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from recsys.cli import main
from recsys.config import ExperimentConfig, load_config
from recsys.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "configs").glob("*.yaml")))
def test_every_shipped_config_loads(name: str) -> None:
    assert isinstance(load_config(ROOT / "configs" / name), ExperimentConfig)


def test_unknown_key_names_file_line_path_and_closest_key(tmp_path: Path) -> None:
    path = write(tmp_path, "model:\n  name: marn\n  embeding_dim: 16\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    text = str(err.value)
    assert str(path) in text
    assert "line 3" in text
    assert "unknown key 'model.embeding_dim'" in text
    assert "did you mean 'embedding_dim'" in text


def test_unknown_section_suggests_section(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown key 'trian'; did you mean 'train'"):
        load_config(write(tmp_path, "trian:\n  epochs: 3\n"))


def test_wrong_type_and_out_of_range_name_the_field(tmp_path: Path) -> None:
    path = write(tmp_path, "train:\n  workers: two\n  learning_rate: -1\nencoders:\n  batch_size: 0\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    text = str(err.value)
    assert "3 problem(s)" in text  # all problems at once, not the first only
    assert "line 2: train.workers" in text and "valid integer" in text
    assert "line 3: train.learning_rate" in text and "greater than 0" in text
    assert "line 5: encoders.batch_size" in text


def test_gpu_and_encoder_pool_fields_are_checked_and_named(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "train:\n  gpus_per_worker: -1\nencoders:\n  actors: -1\n  cpus_per_actor: 0\n  gpus_per_actor: fast\n",
    )
    with pytest.raises(ConfigError) as err:
        load_config(path)
    text = str(err.value)
    assert "4 problem(s)" in text
    assert "line 2: train.gpus_per_worker" in text and "line 4: encoders.actors" in text
    assert "line 5: encoders.cpus_per_actor" in text and "line 6: encoders.gpus_per_actor" in text
    defaults = load_config(write(tmp_path, "model:\n  name: marn\n"))
    assert (defaults.train.gpus_per_worker, defaults.encoders.gpus_per_actor) == (0.0, 0.0)  # CPU unless asked


def test_evaluation_pool_fields_are_checked_and_named(tmp_path: Path) -> None:
    path = write(tmp_path, "evaluation:\n  actors: 0\n  ray_min_rows: -5\n  gpus_per_actor: -1\n  placement: ray\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    text = str(err.value)
    assert "4 problem(s)" in text and "line 2: evaluation.actors" in text and "line 3: evaluation.ray_min_rows" in text
    assert "line 4: evaluation.gpus_per_actor" in text and "line 5: unknown key 'evaluation.placement'" in text
    defaults = load_config(write(tmp_path, "model:\n  name: marn\n")).evaluation
    assert (defaults.ray_min_rows, defaults.gpus_per_actor) == (1_000_000, 0.0)  # small splits stay in process


def test_prepare_fields_are_checked_and_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, "prepare:\n  ray_min_rows: many\n  rows_per_partition: 0\n"))
    text = str(err.value)
    assert "2 problem(s)" in text and "line 2: prepare.ray_min_rows" in text
    assert "line 3: prepare.rows_per_partition" in text


def test_unknown_choice_lists_valid_names(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"model.name: .*'marn'.*'din'"):
        load_config(write(tmp_path, "model:\n  name: transformer\n"))


def test_nested_unknown_key_inside_encoder(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown key 'encoders.image.wieghts'; did you mean 'weights'"):
        load_config(write(tmp_path, "encoders:\n  image:\n    wieghts: x.pth\n"))


def test_duplicate_key_and_bad_yaml_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="duplicate key 'epochs'"):
        load_config(write(tmp_path, "train:\n  epochs: 3\n  epochs: 4\n"))
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(write(tmp_path, "train: [1, 2\n"))
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(write(tmp_path, "- a\n- b\n"))


def test_config_show_prints_resolved_defaults(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = write(tmp_path, "train:\n  epochs: 7\nencoders:\n  audio: {kind: logmel}\n")
    assert main(["config", "show", str(path)]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert set(shown) == {
        "data",
        "features",
        "encoders",
        "model",
        "train",
        "serve",
        "prepare",
        "evaluation",
        "tracking",
    }
    assert shown["train"]["epochs"] == 7
    assert shown["train"]["batch_size"] == ExperimentConfig().train.batch_size  # a default, filled in
    assert shown["encoders"]["audio"]["kind"] == "logmel"
    assert shown["encoders"]["audio"]["n_mels"] == 64


def test_cli_reports_config_error_without_traceback(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = write(tmp_path, "serve:\n  prot: 80\n")
    assert main(["config", "show", str(path)]) == 2
    err = capsys.readouterr().err
    assert "did you mean 'port'" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("text", ["", "  \n\n", "# only\n# comments\n", "---\n", "---\n...\n"])
def test_an_empty_config_file_is_refused(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=r"exp\.yaml: empty config file") as err:
        load_config(path)
    assert "\n" not in str(err.value)
    assert load_config(write(tmp_path, "{}\n")) == ExperimentConfig()  # an explicit empty mapping: every default


@pytest.mark.parametrize("text", ["- a\n- b\n", "42\n", "just a string\n"])
def test_a_top_level_that_is_not_a_mapping_is_refused(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError, match=r"exp\.yaml: the top level must be a mapping"):
        load_config(write(tmp_path, text))


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("train:\n  weight_decay: .inf\n", "train.weight_decay: Input should be a finite number"),
        ("model:\n  lambda_adv: .nan\n", "model.lambda_adv: Input should be a finite number"),
        ("serve:\n  max_body_mb: .inf\n", "serve.max_body_mb: Input should be a finite number"),
        ("serve:\n  max_body_mb: 0.0001\n", "serve.max_body_mb: Input should be greater than or equal to 0.001"),
    ],
)
def test_non_finite_numbers_and_a_useless_body_limit_are_refused(tmp_path: Path, text: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(fragment)):
        load_config(write(tmp_path, text))


def test_a_yaml_syntax_error_is_one_line_with_its_position(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, "train: {epochs: 3\n"))
    assert "invalid YAML: line 2, column 1: expected ',' or '}'" in str(err.value) and "\n" not in str(err.value)
