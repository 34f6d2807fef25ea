"""The model-selection sections of a bundle: each mistake a located line, as the rest of the bundle."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from manymodels.bundle import check_bundle, load_config
from manymodels.errors import BundleError

HEAD = """\
bundle: {name: shop}
resources:
  datasets:
    sales: {path: sales.parquet}
  models:
    demand:
      dataset: sales
      segment_by: store
      label: sales
"""


def problems(tmp_path: Path, model: str) -> list[str]:
    """Every problem `validate` reports for a model whose selection sections are `model` (YAML, 6 spaces in)."""
    path = tmp_path / "manymodels.yml"
    path.write_text(HEAD + model)
    try:
        config = load_config(path)
    except BundleError as exc:
        return exc.problems
    return check_bundle(config, data=False)


@pytest.mark.parametrize(
    ("model", "line", "message"),
    [
        ("      validation: {kind: kfold, windows: 3}\n", 10,
         "demand.validation windows are for kind time; kfold takes folds and seed"),
        ("      validation: {kind: time, horizon: 4}\n", 6,
         "validation kind time needs by, the time column (or a split by time)"),
        ("      validation: {folds: 1}\n", 10, "demand.validation.folds must be >= 2"),
        ("      validation: {}\n      candidates:\n        - {name: s, type: baseline, method: seasonal}\n", 12,
         "candidates[0] baseline seasonal needs period"),
        ("      validation: {}\n      candidates:\n        - {name: a}\n        - {name: a, type: baseline, "
         "method: mean}\n", 6, "candidate name(s) a used twice"),
        ("      validation: {}\n      candidates:\n        - {name: lgbm}\n      tuning:\n"
         "        lgbn: {space: {num_leaves: [4, 8]}}\n", 6, "tuning.lgbn: no candidate 'lgbn' (did you mean 'lgbm'?)"),
        ("      validation: {}\n      candidates:\n        - {name: m, type: baseline, method: mean}\n"
         "      tuning:\n        m: {space: {x: [1]}}\n", 6, "tuning.m: a baseline has no parameters to tune"),
        ("      validation: {}\n      tuning:\n        lightgbm: {space: {num_leaves: [4]}, trials: 0}\n", 12,
         "tuning.lightgbm.trials must be >= 1"),
        ("      validation: {}\n      tuning:\n        lightgbm: {space: {}}\n", 12,
         "tuning.lightgbm.space must have at least 1 item"),
        ("      validation: {}\n      tuning:\n        lightgbm: {space: {num_leaves: {int: [4, 0.5]}, eta: []}}\n",
         12, "space num_leaves: int takes [low, high], two integers; got [4, 0.5]; eta: an empty list of choices"),
        ("      validation: {}\n      tuning:\n        lightgbm: {space: {num_leaves: 'many'}}\n", 12,
         "num_leaves: give a list of choices"),
        ("      validation: {}\n      tuning:\n        lightgbm: {space: {eta: {float: [0, 1], log: true}}}\n", 12,
         "eta: a log range needs low above 0; got 0"),
        ("      validation: {}\n      tuning:\n        lightgbm: {space: {eta: {float: [0.1, 1]}}, sampler: grid}\n",
         12, "sampler grid takes lists of choices; eta is a range"),
        ("      tuning:\n        lightgbm: {space: {num_leaves: [4, 8]}}\n", 6,
         "candidates and tuning are chosen among by cross-validation: add validation"),
        ("      validation: {}\n      candidates:\n        - {name: l, type: baseline, method: last}\n", 6,
         "baseline(s) l need the rows' time order"),
        ("      estimator: {type: lightgbm}\n      validation: {}\n      candidates:\n        - {name: a}\n", 6,
         "give estimator (one model kind) or candidates (several to choose from), not both"),
        ("      validation: {}\n      tuning:\n        lightgbm: {space: {num_leaves: [4]}, sample: 5}\n", 12,
         "sample is for scope global"),
        ("      validation: {}\n      selection: {metric: auc}\n", 6,
         "selection.metric 'auc' does not fit task regression"),
        ("      validation: {}\n      tuning:\n        lightgbm: {space: {num_leafs: [4, 8]}}\n", 12,
         "tuning.lightgbm.space.num_leafs: LightGBM has no parameter 'num_leafs' (did you mean 'num_leaf'?)"),
        ("      validation: {}\n      candidates:\n        - {name: r, type: sklearn, "
         "entry: sklearn.linear_model.Ridge, params: {alpah: 1}}\n", 12,
         "candidates[0].params.alpah: sklearn.linear_model.Ridge has no parameter"),
        ("      validation: {}\n      candidates:\n        - {name: r, type: sklearn, entry: nowhere.Model}\n", 12,
         "candidates[0].entry: cannot import module 'nowhere'"),
    ],
)
def test_each_mistake_is_one_located_line(tmp_path: Path, model: str, line: int, message: str) -> None:
    found = problems(tmp_path, model)
    assert len(found) == 1, found
    assert found[0].startswith(f"manymodels.yml:{line}: "), found
    assert message in found[0], found


def test_a_sound_selection_has_no_problems(tmp_path: Path) -> None:
    model = """\
      split: {by: week, cutoff: 40}
      validation: {kind: time, windows: 4, horizon: 8, step: 8}
      candidates:
        - {name: lgbm, type: lightgbm, params: {num_boost_round: 100}}
        - {name: ridge, type: sklearn, entry: sklearn.linear_model.Ridge}
        - {name: last, type: baseline, method: last}
        - {name: season, type: baseline, method: seasonal, period: 52}
      tuning:
        lgbm:
          space: {num_leaves: {int: [4, 64]}, learning_rate: {float: [0.01, 0.3], log: true},
                  min_data_in_leaf: [2, 5, 20]}
          trials: 20
          sampler: tpe
          scope: segment
        ridge: {space: {alpha: {float: [0.01, 10], log: true}}, sampler: random, trials: 5}
      selection: {metric: mae, rule: best}
"""
    assert problems(tmp_path, model) == []
    config = load_config(tmp_path / "manymodels.yml")
    tuning = config.resolved.resources.models["demand"].tuning["lgbm"]
    assert tuning.space["min_data_in_leaf"] == {"choices": [2, 5, 20]}
    assert tuning.space["learning_rate"] == {"float": [0.01, 0.3], "log": True}


def test_lightgbm_parameter_names_are_cached_per_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """LightGBM's parameter names are asked of LightGBM once per version and kept in the user's cache folder (a
    command that checks a bundle then need not import it); a damaged cache is asked again and rewritten."""
    import importlib.metadata

    from manymodels.estimators import core

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    cache = tmp_path / "manymodels" / f"lightgbm-{importlib.metadata.version('lightgbm')}-params.json"
    core._lightgbm_params.cache_clear()
    try:
        names = core.accepted_params("lightgbm", None)
        assert names is not None and {"num_boost_round", "min_data_in_leaf", "num_leaves"} <= names
        assert set(json.loads(cache.read_text())) == names
        cache.write_text(json.dumps(["only_this"]))  # what the cache says is what is used: LightGBM is not asked
        core._lightgbm_params.cache_clear()
        assert core.accepted_params("lightgbm", None) == {"only_this"}
        cache.write_text("{not json")  # damaged: asked again, and the cache mended
        core._lightgbm_params.cache_clear()
        assert core.accepted_params("lightgbm", None) == names
        assert set(json.loads(cache.read_text())) == names
    finally:
        core._lightgbm_params.cache_clear()  # the next test reads the real cache again
