"""What model selection decided across a fleet: wins per candidate, the margin over the baselines."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from manymodels.bundle.schema import HIGHER_IS_BETTER
from manymodels.engines import Dataset, Engine
from manymodels.errors import DataError
from manymodels.registry import manifest as mf
from manymodels.segment import SegmentSpec
from manymodels.segment.fit import OK
from manymodels.segment.select import SelectionError, new_study, suggest, validation_of
from manymodels.segment.spec import Candidate

WON = "won."  # summary key prefix: segments each candidate won
BASELINE_WON = "segments_baseline_won"
GAIN_P50 = "baseline_gain_p50"  # the median relative margin of the winner over the best baseline
REGRET_P50 = "regret_p50"  # selection.regret: the median, over segments, of the winner's holdout error minus the best's
REGRET_MEAN = "regret_mean"
CHOSE_BEST = "segments_chose_best"  # segments whose winner was also the best candidate on the holdout
LOUD_FRACTION = 0.5  # more than this share of segments won by a baseline: a warning


def selection_summary(manifest: pd.DataFrame, spec: SegmentSpec) -> dict[str, float]:
    """Summary metrics of selection: `won.<candidate>` per candidate, segments a baseline won, and the
    median relative gain of the winner over the best baseline (e.g. 0.3: 30 % lower error)."""
    if not spec.selecting or mf.CANDIDATE not in manifest.columns:
        return {}
    ok = manifest.loc[mf.is_ok(manifest)]
    winners = ok[mf.CANDIDATE].astype("string")
    summary = {f"{WON}{c.name}": float((winners == c.name).sum()) for c in spec.choices()}
    maximize = spec.validation is not None and spec.validation.maximize
    regret = mf.selection_regrets(ok, maximize)
    if regret.notna().any():
        summary[REGRET_P50], summary[REGRET_MEAN] = float(regret.median()), float(regret.mean())
        summary[CHOSE_BEST] = float((regret <= 0).sum())
    baselines = spec.rules()
    if not baselines:
        return summary
    summary[BASELINE_WON] = float(winners.isin(baselines).sum())
    best = ok[mf.CV_BASELINE].to_numpy(dtype=float)
    mean = ok[mf.CV_MEAN].to_numpy(dtype=float)
    keep = np.isfinite(best) & np.isfinite(mean) & (best != 0)
    if keep.any():
        maximize = spec.validation is not None and spec.validation.maximize
        gain = (mean[keep] - best[keep]) if maximize else (best[keep] - mean[keep])
        summary[GAIN_P50] = float(np.median(gain / np.abs(best[keep])))
    return summary


def baseline_warning(summary: dict[str, float], spec: SegmentSpec) -> str | None:
    """A loud line when baselines won most segments: the models do not beat a naive rule there."""
    won = summary.get(BASELINE_WON)
    ok = summary.get("segments_ok", 0.0)
    if won is None or not ok or won / ok <= LOUD_FRACTION:
        return None
    names = spec.rules()
    per = ", ".join(f"{n} {int(summary.get(WON + n, 0)):,}" for n in names)
    return (
        f"a baseline won {int(won):,} of {int(ok):,} segments ({won / ok:.0%}: {per}): the models do not beat "
        "a naive rule on most segments; look at the features, the parameters (tuning) or the rows per segment"
    )


NAIVE_WORSE = "segments_worse_than_naive"  # forecasts: segments whose chosen model lost to naive on the holdout
NAIVE_JUDGED = "segments_judged_against_naive"  # those with both holdout figures


def naive_summary(manifest: pd.DataFrame, spec: SegmentSpec) -> dict[str, float]:
    """A forecast fleet against `naive` on the holdout: how many segments' chosen models did worse, and naive's
    median metric (`naive_<metric>_p50`, beside the run's `<metric>_p50`)."""
    if spec.forecast is None or mf.HOLDOUT_NAIVE not in manifest.columns:
        return {}
    ok = manifest.loc[mf.is_ok(manifest)]
    chosen = ok[spec.metric].to_numpy(dtype=float)
    naive = ok[mf.HOLDOUT_NAIVE].to_numpy(dtype=float)
    judged = np.isfinite(chosen) & np.isfinite(naive)
    if not judged.any():
        return {}
    maximize = spec.metric in HIGHER_IS_BETTER  # the holdout's metric, not the one selection used
    worse = chosen[judged] < naive[judged] - 1e-12 if maximize else chosen[judged] > naive[judged] + 1e-12
    return {NAIVE_WORSE: float(worse.sum()), f"naive_{spec.metric}_p50": float(np.median(naive[judged])),
            NAIVE_JUDGED: float(judged.sum())}


def interval_summary(manifest: pd.DataFrame) -> dict[str, float]:
    """A forecast fleet's prediction intervals judged on the holdout: per level measured in training, the median
    over segments of their coverage (`coverage_<level>_p50`) and how many segments had an interval at it
    (`segments_with_interval_<level>`)."""
    found, _ = mf.interval_scores_by_level(manifest.loc[mf.is_ok(manifest)])
    out: dict[str, float] = {}
    for level, values in found.items():
        if values:
            out[f"coverage_{level}_p50"] = float(np.median([coverage for coverage, _ in values]))
            out[f"segments_with_interval_{level}"] = float(len(values))
    return out


def naive_warning(summary: dict[str, float], spec: SegmentSpec) -> str | None:
    """A loud line when the chosen forecasts lose to `naive` on the holdout: on most segments, or on the median."""
    worse, judged = summary.get(NAIVE_WORSE), summary.get(NAIVE_JUDGED)
    if worse is None or not judged:
        return None
    naive, ours = summary.get(f"naive_{spec.metric}_p50"), summary.get(f"{spec.metric}_p50")
    maximize = spec.metric in HIGHER_IS_BETTER
    median_worse = naive is not None and ours is not None and (ours < naive if maximize else ours > naive)
    if worse / judged <= LOUD_FRACTION and not median_worse:
        return None
    medians = f"; {spec.metric} p50 {ours:.4g} against naive's {naive:.4g}" if ours is not None and naive is not None \
        else ""
    return (
        f"the chosen forecasts did worse than naive (the last value) on the holdout of {int(worse):,} of "
        f"{int(judged):,} segments{medians}: look at the features, the target_transform (trees need differences "
        "to follow a trend) or the history per segment"
    )


def tune_globally(
    engine: Engine, data: Any, dataset: Dataset, spec: SegmentSpec, on_trial: Callable[[str], None] | None = None
) -> tuple[SegmentSpec, dict[str, dict[str, Any]]]:
    """One Optuna study per candidate with `scope: global`, run before the fleet is fitted.

    Each trial fits the same seeded sample of segments on the engine with one parameter set and
    scores it by their mean cross-validated metric; the spec returned has each such candidate's
    best parameters fixed (and no tuning left), so every segment is fitted with them.

    Returns:
        The spec to fit the fleet with, and per tuned candidate: its best params, their mean CV
        metric, the sample's size and the trials run.
    """
    candidates = list(spec.choices())
    found: dict[str, dict[str, Any]] = {}
    for i, candidate in enumerate(candidates):
        if not candidate.tuned_globally:
            continue
        sample, size = _seeded_sample(engine, data, dataset, spec, candidate.sample)
        params, value, trials = _global_study(engine, sample, spec, candidate, on_trial)
        candidates[i] = replace(candidate, params=params, space={}, trials=0, scope="segment")
        found[candidate.name] = {"params": params, "cv_mean": value, "sample": size, "trials": trials}
    return replace(spec, candidates=tuple(candidates)), found


def _seeded_sample(engine: Engine, data: Any, dataset: Dataset, spec: SegmentSpec, size: int) -> tuple[Any, int]:
    """`size` of the fleet's segments (all, when fewer), drawn with `validation.seed`, and how many: the same on
    every engine and every run of the same rows."""
    size = min(size, len(data))
    keep = np.zeros(len(data), dtype=bool)
    keep[np.random.default_rng(validation_of(spec).seed).choice(len(data), size=size, replace=False)] = True
    return engine.select(data, keep, dataset, spec), size


def _global_study(
    engine: Engine, sample: Any, spec: SegmentSpec, candidate: Candidate, on_trial: Callable[[str], None] | None
) -> tuple[dict[str, Any], float, int]:
    validation = validation_of(spec)
    errors: list[str] = []

    def objective(trial: Any) -> float:
        params = {**candidate.params, **suggest(trial, candidate.space)}
        probe = replace(spec, candidates=(replace(candidate, params=params, space={}, trials=0, scope="segment"),))
        results = engine.fit(sample, probe, None)
        values = [r.cv_mean for r in results if r.status == OK and math.isfinite(r.cv_mean)]
        if not values:
            reasons = sorted({str(r.error) for r in results if r.error})
            errors.append("; ".join(reasons[:3]) or "no segment could be scored")
            raise SelectionError(errors[-1])
        if on_trial is not None:
            on_trial(f"tuning {candidate.name} (global): trial {trial.number + 1}/{candidate.trials}")
        return float(np.mean(values))

    study = new_study(candidate, validation.seed, validation.maximize)
    study.optimize(objective, n_trials=candidate.trials, catch=(Exception,))
    complete = [t for t in study.trials if t.value is not None]
    if not complete:
        raise DataError(
            f"global tuning of candidate {candidate.name!r}: all {len(study.trials)} trial(s) failed on the "
            f"{len(sample)} sampled segment(s)" + (f": {errors[0]}" if errors else "")
        )
    values = [float(t.value) for t in complete]
    best = complete[values.index(max(values) if validation.maximize else min(values))]
    return {**candidate.params, **best.params}, float(values[complete.index(best)]), len(study.trials)


def choose_for_fleet(engine: Engine, data: Any, dataset: Dataset, spec: SegmentSpec, sample: int
                     ) -> tuple[SegmentSpec, dict[str, Any]]:
    """Selection rule fleet: the candidate every segment takes, judged before the fleet is fitted on a seeded sample
    of its segments (their selection run on the engine, nothing kept).

    Returns:
        The spec to fit the fleet with (`chosen` set), and what the run records: the choice, the sample's size and
        each candidate's median ratio to the segment's best.

    Raises:
        DataError: no sampled segment could be scored.
    """
    segments, size = _seeded_sample(engine, data, dataset, spec, sample)
    chosen, ratios = fleet_choice(engine.fit(segments, spec, None), spec)
    return replace(spec, chosen=chosen), {"chosen": chosen, "sample": size, "ratios": ratios}


def fleet_choice(results: Sequence[Any], spec: SegmentSpec) -> tuple[str, dict[str, float]]:
    """The candidate with the lowest median, over the segments scored, of its mean window error divided by that
    segment's best (1: it was the best there; a candidate that failed in a segment counts as infinitely worse);
    ties go to the candidate listed first. Returns it and each candidate's median ratio.

    Raises:
        DataError: no segment had a scored candidate.
    """
    names = [c.name for c in spec.choices()]
    ratios: dict[str, list[float]] = {n: [] for n in names}
    for result in results:
        if result.status != OK or not result.cv_scores:
            continue
        means = {n: v.get("mean") for n, v in json.loads(str(result.cv_scores)).items()}
        best = min((float(v) for v in means.values() if v is not None and math.isfinite(v)), default=math.nan)
        if not best > 0:
            continue  # no error to divide by (none scored, or one candidate exact)
        for n in names:
            value = means.get(n)
            ratios[n].append(float(value) / best if value is not None and math.isfinite(value) else math.inf)
    scored = {n: float(np.median(v)) for n, v in ratios.items() if v}
    if not scored:
        reasons = sorted({str(r.error) for r in results if r.error})
        raise DataError("selection rule fleet: no sampled segment could be scored"
                        + (f" ({'; '.join(reasons[:2])})" if reasons else ""))
    best_ratio = min(scored.values())
    return next(n for n in names if scored.get(n) == best_ratio), scored


def with_tuned(spec: SegmentSpec, found: dict[str, dict[str, Any]]) -> SegmentSpec:
    """The spec with each globally tuned candidate's parameters fixed to those a study found before (a resumed
    run's: `found` maps candidate name to parameters), as `tune_globally` returns it."""
    candidates = [
        replace(c, params=dict(found[c.name]), space={}, trials=0, scope="segment")
        if c.tuned_globally and c.name in found else c
        for c in spec.choices()
    ]
    return replace(spec, candidates=tuple(candidates))


def tuned_globally(spec: SegmentSpec) -> bool:
    """Whether a candidate of the spec is tuned once for the fleet."""
    return spec.selecting and any(c.tuned_globally for c in spec.choices())


# Columns an evaluation table gains when the challenger run cross-validated its segments.
CV_CHALLENGER = "cv_challenger"  # the challenger's winner: its mean fold metric
CV_CHAMPION = "cv_champion"  # the champion's configuration (candidate and params) on the same folds
CV_FOLDS_WON = "cv_folds_won"  # folds where the challenger's winner beat the champion's configuration
CV_FOLDS = "cv_folds"
BASIS = "basis"  # what `challenger` and `champion` were measured on: holdout or cv


def cv_comparison(challenger: pd.DataFrame, champion: pd.DataFrame | None, spec: SegmentSpec) -> pd.DataFrame:
    """Per segment: the challenger's winner against the champion's configuration, on the challenger run's folds.

    The challenger run cross-validated every candidate on each segment's current training rows;
    when the champion's model came from one of them with the same parameters (an untuned
    candidate, or a tuned one whose best trial drew the same), that candidate's fold metrics *are*
    the champion's configuration on the same folds. Elsewhere (parameters the run never tried,
    or no cross-validation on either side) the CV columns are null and the holdout decides alone.
    """
    keys_by = list(spec.segment_by)
    columns = [*keys_by, CV_CHALLENGER, CV_CHAMPION, CV_FOLDS_WON, CV_FOLDS]
    needed = (mf.CANDIDATE, mf.PARAMS, mf.CV_SCORES)
    if (
        champion is None
        or not spec.selecting
        or any(c not in challenger.columns for c in needed)
        or any(c not in champion.columns for c in (mf.CANDIDATE, mf.PARAMS))
    ):
        return pd.DataFrame(columns=columns)
    validation = validation_of(spec)
    fixed = {c.name: _canonical(c.params) for c in spec.choices() if not (c.trials and c.space)}
    mine = mf.served(challenger)[[*keys_by, mf.CANDIDATE, mf.CV_SCORES]]
    theirs = mf.served(champion)[[*keys_by, mf.CANDIDATE, mf.PARAMS]]
    both = mine.merge(theirs, on=keys_by, how="inner", suffixes=("", "_champion"))
    rows = []
    for rec in both.to_dict("records"):
        scores = json.loads(str(rec[mf.CV_SCORES])) if isinstance(rec[mf.CV_SCORES], str) else {}
        winner = scores.get(str(rec[mf.CANDIDATE]), {})
        name = rec[f"{mf.CANDIDATE}_champion"]
        entry = scores.get(str(name)) if isinstance(name, str) else None
        params = rec[mf.PARAMS]
        mine_folds = [np.nan if v is None else float(v) for v in winner.get("folds", [])]
        cv_champion, won, n = np.nan, np.nan, len(mine_folds)
        if entry is not None and isinstance(params, str):
            tried = _canonical(entry["params"]) if "params" in entry else fixed.get(str(name))
            if tried == _canonical(json.loads(params)):
                theirs_folds = np.array([np.nan if v is None else float(v) for v in entry.get("folds", [])])
                ours = np.array(mine_folds)
                if len(theirs_folds) == len(ours):
                    better = ours > theirs_folds if validation.maximize else ours < theirs_folds
                    won = float((better & (np.abs(ours - theirs_folds) > 1e-12)).sum())
                    cv_champion = float(np.nanmean(theirs_folds)) if np.isfinite(theirs_folds).any() else np.nan
        mean = float(np.nanmean(mine_folds)) if mine_folds and np.isfinite(mine_folds).any() else np.nan
        rows.append([*(rec[k] for k in keys_by), mean, cv_champion, won, n])
    return pd.DataFrame(rows, columns=columns)


def _canonical(params: dict[str, Any]) -> str:
    return json.dumps(params, sort_keys=True, default=str)
