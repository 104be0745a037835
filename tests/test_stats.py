"""Bootstrap statistics: coverage, determinism, cluster resampling, paired false-alarm rate, bad input."""
import numpy as np
import pytest

from evals.stats import CI, bootstrap_ci, bootstrap_statistic_ci, paired_bootstrap, stratified_mean_ci


def test_ci_covers_true_mean_at_about_nominal_rate():
    rng = np.random.default_rng(123)
    hits = 0
    for rep in range(200):
        sample = rng.normal(loc=3.0, scale=2.0, size=80)
        ci = bootstrap_ci(sample, n_resamples=500, seed=rep)
        assert ci.low <= ci.value <= ci.high
        hits += ci.low <= 3.0 <= ci.high
    assert 0.90 <= hits / 200 <= 0.99


def test_same_seed_same_interval_other_seed_differs():
    x = np.random.default_rng(0).exponential(size=300)
    first, again = bootstrap_ci(x, seed=7), bootstrap_ci(x, seed=7)
    assert first == again
    assert bootstrap_ci(x, seed=8) != first
    assert first.to_dict() == {"value": first.value, "low": first.low, "high": first.high, "n": 300,
                               "level": 0.95, "n_resamples": 1000, "seed": 7}
    assert isinstance(first, CI)


def test_cluster_bootstrap_draws_whole_groups():
    # Each prompt's images share one score: a resample that split groups would produce other means.
    group_scores = np.array([0.0, 1.0, 10.0, 100.0])
    groups = np.repeat(["p0", "p1", "p2", "p3"], 3)
    scores = group_scores[[0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]]
    ci = bootstrap_ci(scores, groups, n_resamples=2000, level=0.999, seed=1)
    means_of_group_draws = {np.mean(c) for c in np.array(np.meshgrid(*[group_scores] * 4)).reshape(4, -1).T}
    assert ci.value == pytest.approx(scores.mean())
    assert any(np.isclose(ci.low, m) for m in means_of_group_draws)
    assert any(np.isclose(ci.high, m) for m in means_of_group_draws)


def test_cluster_bootstrap_is_wider_for_correlated_images():
    rng = np.random.default_rng(2)
    prompt_effect = rng.normal(size=100)
    scores = np.repeat(prompt_effect, 4) + 0.1 * rng.normal(size=400)
    groups = np.repeat(np.arange(100), 4)
    naive, cluster = bootstrap_ci(scores), bootstrap_ci(scores, groups)
    assert (cluster.high - cluster.low) > 1.5 * (naive.high - naive.low)


@pytest.mark.parametrize("statistic", [np.median, np.std])
def test_general_statistic_with_equal_and_unequal_groups(statistic):
    rng = np.random.default_rng(3)
    scores = rng.normal(size=60)
    equal = np.repeat(np.arange(20), 3)
    unequal = np.sort(rng.integers(0, 15, size=60))
    for groups in (equal, unequal):
        ci = bootstrap_ci(scores, groups, statistic=statistic, n_resamples=300)
        assert ci.value == pytest.approx(statistic(scores))
        assert ci.low < ci.high


def test_general_statistic_paths_draw_the_same_whole_groups_as_the_mean_path():
    """The rectangular and ragged paths (any statistic) against the exact sums path that np.mean takes, on the
    same draws: a mean computed through them must give the same interval. Groups come shuffled, so an index
    into the unsorted scores, or a shift that crosses group boundaries, shows."""
    rng = np.random.default_rng(5)
    scores = rng.exponential(size=60)
    for groups in (rng.permutation(np.repeat(np.arange(20), 3)), rng.permutation(rng.integers(0, 15, size=60))):
        general = bootstrap_ci(scores, groups, statistic=lambda x, axis: np.mean(x, axis=axis), seed=9)
        exact = bootstrap_ci(scores, groups, seed=9)
        assert (general.low, general.high) == pytest.approx((exact.low, exact.high), rel=1e-12)


def test_nan_scores_are_refused_with_their_count():
    with pytest.raises(ValueError, match="2 of 4 scores are NaN"):
        bootstrap_ci([1.0, np.nan, 2.0, np.nan])


def test_paired_false_alarm_rate_at_most_nominal():
    rng = np.random.default_rng(4)
    prompt_difficulty = rng.normal(size=(300, 60))
    alarms = 0
    for rep in range(300):  # two models of equal quality scored on the same 60 prompts
        a = prompt_difficulty[rep] + rng.normal(scale=0.5, size=60)
        b = prompt_difficulty[rep] + rng.normal(scale=0.5, size=60)
        alarms += paired_bootstrap(a, b, n_resamples=400, seed=rep).p_value < 0.05
    assert alarms / 300 <= 0.05 + 0.035


def test_paired_detects_a_real_shift_and_keeps_groups_together():
    rng = np.random.default_rng(5)
    groups = np.repeat(np.arange(50), 4)
    a = np.repeat(rng.normal(size=50), 4) + rng.normal(scale=0.3, size=200)
    b = a + 0.2 + rng.normal(scale=0.3, size=200)
    result = paired_bootstrap(a, b, groups, seed=0)
    assert result.diff == pytest.approx(b.mean() - a.mean())
    assert result.low < result.diff < result.high and result.low > 0
    assert result.p_value < 0.01 and result.n == 200


def test_paired_refuses_misaligned_runs():
    with pytest.raises(ValueError, match=r"len\(a\)=3 but len\(b\)=2"):
        paired_bootstrap([1, 2, 3], [1, 2])


def test_statistic_ci_resamples_rows():
    rows = np.random.default_rng(6).normal(size=(200, 3))
    ci = bootstrap_statistic_ci(rows, lambda r: float(r[:, 0].mean()), n_resamples=400, seed=0)
    reference = bootstrap_ci(rows[:, 0], n_resamples=400, seed=0)
    assert ci.value == pytest.approx(rows[:, 0].mean()) and ci.n == 200
    width = reference.high - reference.low
    assert abs(ci.low - reference.low) < 0.15 * width and abs(ci.high - reference.high) < 0.15 * width


def test_bias_corrected_interval_recentres_a_biased_statistic():
    rows = np.random.default_rng(0).normal(size=(40, 3))
    distinct = lambda r: float(len(np.unique(r[:, 0])))  # noqa: E731  (resamples repeat rows: always lower)
    plain = bootstrap_statistic_ci(rows, distinct, n_resamples=200, seed=0)
    corrected = bootstrap_statistic_ci(rows, distinct, n_resamples=200, seed=0, bias_corrected=True)
    assert plain.high < plain.value  # the plain percentile interval misses the estimate entirely
    assert corrected.low <= corrected.value <= corrected.high
    assert corrected.high - corrected.low == pytest.approx(plain.high - plain.low)


def _clustered_tasks(rng, n_prompts=120, k=4, tasks=("a", "b", "c")):
    """k correlated images per prompt (a per-prompt difficulty), prompts split evenly over tasks."""
    difficulty = rng.uniform(0.05, 0.95, n_prompts)
    scores = (rng.random((n_prompts, k)) < difficulty[:, None]).astype(float).ravel()
    prompts = np.repeat(np.arange(n_prompts), k)
    return scores, np.array(tasks)[prompts % len(tasks)], prompts


def test_stratified_ci_value_and_a_naive_loop_agree():
    rng = np.random.default_rng(0)
    scores, strata, prompts = _clustered_tasks(rng, n_prompts=30)
    weights = {"a": 0.5, "b": 0.3, "c": 0.2}
    ci = stratified_mean_ci(scores, strata, prompts, weights, n_resamples=300, seed=4)
    means = {t: scores[strata == t].mean() for t in weights}
    assert ci.value == pytest.approx(sum(w * means[t] for t, w in weights.items()))
    # the same draws by hand: per stratum (sorted), its n prompts with replacement, the replicate's distance from
    # the stratum mean stretched by sqrt(n/(n-1)) and clipped to the stratum's scores, then the weighted mean
    draw = np.random.default_rng(4)
    boot = np.zeros(300)
    for t in sorted(weights):
        ids = np.unique(prompts[strata == t])
        picked = draw.integers(0, len(ids), size=(300, len(ids)))
        for r in range(300):
            rows = np.concatenate([np.flatnonzero(prompts == ids[i]) for i in picked[r]])
            stretch = np.sqrt(len(ids) / (len(ids) - 1))
            stretched = means[t] + stretch * (scores[rows].mean() - means[t])
            boot[r] += weights[t] * np.clip(stretched, scores[strata == t].min(), scores[strata == t].max())
    assert (ci.low, ci.high) == pytest.approx(tuple(np.quantile(boot, [0.025, 0.975])))


def test_stratified_ci_covers_at_the_nominal_rate_where_an_image_bootstrap_does_not():
    # GenEval-like: 4 images per prompt of one difficulty. Resampling images treats them as independent and
    # is too narrow (the reviewer's simulation: 79% coverage); resampling prompts holds ~95%.
    rng = np.random.default_rng(1)
    truth = 0.5  # difficulties are uniform(0.05, 0.95): every task's expected score
    covered, naive_covered = 0, 0
    for _ in range(100):
        scores, strata, prompts = _clustered_tasks(rng)
        ci = stratified_mean_ci(scores, strata, prompts, n_resamples=400, seed=0)
        naive = stratified_mean_ci(scores, strata, np.arange(len(scores)), n_resamples=400, seed=0)
        covered += ci.low <= truth <= ci.high
        naive_covered += naive.low <= truth <= naive.high
    assert covered >= 88 and naive_covered <= 85, (covered, naive_covered)


def test_a_fractions_stratified_interval_stays_within_its_scores():
    """GenEval's shapes demo: a task of 3 prompts (4 images each) where one image of one prompt is right gave an
    Overall of 0.014 [-0.001, 0.043]: the sqrt(n/(n-1)) stretch had carried replicates below 0."""
    scores = np.zeros(24)
    scores[0] = 1.0
    strata, prompts = np.repeat(["two_object", "counting"], 12), np.repeat(np.arange(6), 4)
    ci = stratified_mean_ci(scores, strata, prompts, n_resamples=2000, seed=0)
    assert ci.low == 0.0 and 0 < ci.value < ci.high <= 1.0
    ones = stratified_mean_ci(1 - scores, strata, prompts, n_resamples=2000, seed=0)
    assert ones.high == 1.0 and ones.low < ones.value


def test_small_strata_are_rescaled_and_one_prompt_is_refused():
    # 6 tasks of 4 prompts: resampling 4 of 4 keeps only 3/4 of a task mean's variance; the rescaled bootstrap's
    # spread matches the textbook stratified standard error sqrt(sum w² s²/n) / sum w
    rng = np.random.default_rng(2)
    scores = rng.normal(size=24)
    strata, prompts = np.repeat(list("abcdef"), 4), np.arange(24)
    ci = stratified_mean_ci(scores, strata, prompts, n_resamples=20000, seed=0)
    s2 = np.array([scores[strata == t].var(ddof=1) for t in "abcdef"])
    se = np.sqrt((s2 / 4).sum()) / 6
    assert (ci.high - ci.low) / (2 * 1.96) == pytest.approx(se, rel=0.05)
    with pytest.raises(ValueError, match="stratum 'b' has one group"):
        stratified_mean_ci([1.0, 0.0, 1.0], ["a", "a", "b"], ["p", "q", "r"])
    with pytest.raises(ValueError, match="at least 2 groups"):
        bootstrap_ci([1.0, 0.0, 1.0], groups=["p", "p", "p"])
    with pytest.raises(ValueError, match="at least 2 items"):
        bootstrap_ci([1.0])


def test_stratified_ci_refuses_prompts_in_two_strata_and_unnamed_weights():
    with pytest.raises(ValueError, match="span several strata"):
        stratified_mean_ci([1.0, 0.0], ["a", "b"], ["p", "p"])
    with pytest.raises(ValueError, match=r"weights name \['a'\] but the strata are \['a', 'b'\]"):
        stratified_mean_ci([1.0, 0.0], ["a", "b"], ["p", "q"], {"a": 1.0})
