"""Paired bootstrap intervals (:mod:`eapnet.stats`) on fixed toy tables."""
import numpy as np
import pytest

from eapnet.stats import Interval, paired_bootstrap, resolved

# Eight scenes, PSNR-μ in dB: the student is 0.3 dB below the teacher on every scene, give or take 0.05
TEACHER = [31.2, 28.4, 33.9, 30.1, 27.7, 35.0, 29.6, 32.3]
STUDENT = [30.9, 28.05, 33.65, 29.8, 27.35, 34.72, 29.3, 31.95]


def test_a_consistent_drop_is_resolved_and_its_interval_holds_the_mean():
    d = paired_bootstrap(STUDENT, TEACHER)
    assert d.mean == pytest.approx(np.mean(np.subtract(STUDENT, TEACHER)))
    assert d.lo <= d.mean <= d.hi and d.hi < 0 and resolved(d)
    # paired: the spread of the scenes themselves (27.7 .. 35 dB) does not widen the interval
    assert d.hi - d.lo < 0.1 and d.n == 8 and d.level == 0.95


def test_a_difference_that_changes_sign_across_scenes_is_not_resolved():
    noisy = [t + e for t, e in zip(TEACHER, [0.4, -0.5, 0.3, -0.35, 0.2, -0.3, 0.45, -0.3])]
    d = paired_bootstrap(noisy, TEACHER)
    assert d.lo < 0 < d.hi and not resolved(d) and not resolved(d.to_dict())


def test_the_interval_is_deterministic_per_seed_and_narrows_with_the_level():
    a = paired_bootstrap(STUDENT, TEACHER, seed=3)
    assert a == paired_bootstrap(STUDENT, TEACHER, seed=3)
    narrow = paired_bootstrap(STUDENT, TEACHER, level=0.5, seed=3)
    assert a.lo <= narrow.lo <= narrow.hi <= a.hi


def test_the_interval_matches_the_normal_approximation_on_many_scenes():
    rng = np.random.default_rng(1)
    teacher = rng.normal(30, 3, 400)
    student = teacher + rng.normal(-0.2, 0.5, 400)
    d = paired_bootstrap(student, teacher)
    half = 1.96 * np.std(student - teacher, ddof=1) / np.sqrt(400)
    assert (d.hi - d.lo) / 2 == pytest.approx(half, rel=0.1)


def test_one_scene_gives_its_difference_and_bad_tables_are_refused():
    assert paired_bootstrap([30.0], [31.0]) == Interval(-1.0, -1.0, -1.0, 1, 0.95)
    for a, b, needle in (([1, 2], [1], "one length"), ([], [], "no scenes"), ([1, np.nan], [1, 2], "NaN")):
        with pytest.raises(ValueError, match=needle):
            paired_bootstrap(a, b)
    with pytest.raises(ValueError, match="level"):
        paired_bootstrap([1, 2], [1, 2], level=1.0)
