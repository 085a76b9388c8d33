"""Property-based tests (hypothesis) of the package's math: the schedule, the forward posterior (DDPM Eq. 6-7),
the ε / x₀ / v conversions, and deterministic DDIM with an oracle denoiser.

Every expected value is computed here, in float64 with numpy, from the betas alone: never from the library's own
intermediate values (its float32 coefficients). Tolerances are stated in units of float32's unit roundoff
U32 = 2^-24, times the condition number of the operation where one applies; each is explained where it is set.

The runs are reproducible (derandomize=True, no example database): a failure here fails the same way in CI.
hypothesis is one of the dev requirements (README's set-up command installs it).
"""
import math

import numpy as np
import pytest
import torch
from torch import nn

from hypothesis import HealthCheck, given, settings, target
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ddpm_nb.elbo import q_posterior, x0_from_eps
from ddpm_nb.forward import q_sample
from ddpm_nb.loss import PREDICTIONS, convert_prediction, eps_from_v, eps_from_x0, v_from_x0_eps, x0_from_v
from ddpm_nb.sample import SPACINGS, ddim_step, sample, timesteps
from ddpm_nb.schedule import SCHEDULES, Schedule

U32 = 2.0 ** -24  # float32 unit roundoff: the relative error of rounding a float64 to float32

# Reproducible, no deadline (the first call into torch is slow), no example database left in the tree.
PROPS = settings(deadline=None, database=None, derandomize=True, print_blob=True,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# ---------------------------------------------------------------------------------------------------------------
# Strategies
# ---------------------------------------------------------------------------------------------------------------

@st.composite
def drawn_betas(draw, max_T=300, min_alpha_bar=1e-30):
    "β_1..β_T (float64 numpy), each in [1e-5, 0.5], as drawn or sorted, bounded so that ᾱ_T = Π(1-β) > min_alpha_bar."
    T = draw(st.integers(1, max_T))
    cap = min(0.5, -math.expm1(math.log(min_alpha_bar) / T))     # every β < cap  ⇒  Π(1-β) > (1-cap)^T = min_alpha_bar
    b = draw(st.lists(st.floats(1e-5, cap, exclude_max=True), min_size=T, max_size=T))
    order = draw(st.sampled_from(["as drawn", "increasing", "decreasing"]))
    if order != "as drawn": b = sorted(b, reverse=order == "decreasing")
    return np.array(b, dtype=np.float64)


@st.composite
def named_betas(draw):
    "The package's linear, cosine and sigmoid schedules at small T (linear needs T >= 25 for β_T = 0.02·1000/T < 1)."
    name = draw(st.sampled_from(sorted(SCHEDULES)))
    T = draw(st.integers(25 if name == "linear" else 1, 300))
    return SCHEDULES[name](T).numpy()


any_betas = st.one_of(drawn_betas(), named_betas())


def alpha_bar64(betas):
    "ᾱ_t = Π_{s<=t} (1-β_s) (DDPM Eq. 4's notation), in float64, code t = 0..T-1."
    return np.cumprod(1 - np.asarray(betas, dtype=np.float64))


def image_shape():
    "(b, c, h, w), small."
    return st.tuples(st.integers(1, 4), st.integers(1, 3), st.integers(1, 4), st.integers(1, 4))


def images(shape, lim):
    "float64 arrays of `shape` with entries in [-lim, lim]."
    return hnp.arrays(np.float64, shape, elements=st.floats(-lim, lim, allow_nan=False, allow_infinity=False))


def per_item(v, ndim):
    "A (b,) float64 numpy vector shaped (b, 1, ..., 1) to broadcast against (b, ...) arrays."
    return np.asarray(v, dtype=np.float64).reshape(-1, *[1] * (ndim - 1))


def worst_ratio(checks):
    "max |got − want| / tol over (got, want, tol, what) checks: hypothesis.target() steers the search towards large ones."
    r = [np.max(np.abs(np.asarray(g.detach().double()) - w) / (np.broadcast_to(t, np.shape(w)) + 1e-300)) for g, w, t, _ in checks]
    return float(np.nan_to_num(max(r), nan=1e30, posinf=1e30))


def assert_within(got, want, tol, what):
    "|got − want| <= tol elementwise (numpy float64 arrays, tol broadcastable); the message names the worst element."
    got = got.detach().double().numpy() if isinstance(got, torch.Tensor) else np.asarray(got, dtype=np.float64)
    err = np.abs(got - want)
    tol = np.broadcast_to(tol, err.shape)
    worst = np.unravel_index(np.argmax(err - tol), err.shape) if err.size else ()
    assert np.all(np.isfinite(got)) and np.all(err <= tol), (
        f"{what}: |error| {err[worst]:.3g} > tolerance {tol[worst]:.3g} at {worst} (got {got[worst]!r}, want {want[worst]!r})")


# ---------------------------------------------------------------------------------------------------------------
# 1-2. The schedule
# ---------------------------------------------------------------------------------------------------------------

@settings(PROPS, max_examples=150)
@given(betas=any_betas)
def test_alpha_bar_is_the_cumulative_product(betas):
    """ᾱ_t = Π_{s≤t} α_s (DDPM Eq. 4): stored in float32, ᾱ is strictly decreasing, lies strictly in (0, 1), and equals
    the float64 cumulative product to one float32 rounding (the schedule computes in float64 and casts once, so the
    bound is U32 relative; rtol 2·U32 leaves a margin, and a float32 cumulative product, whose error grows like T·U32,
    would fail it)."""
    s = Schedule(betas)
    ab = s.alpha_bar
    assert ab.dtype == torch.float32 and ab.shape == (len(betas),)
    assert bool((ab > 0).all()) and bool((ab < 1).all()), f"alpha_bar leaves (0, 1): min {ab.min().item()!r}, max {ab.max().item()!r}"
    assert bool((ab[1:] < ab[:-1]).all()), f"alpha_bar is not strictly decreasing at t = {int((ab[1:] >= ab[:-1]).nonzero()[0])}"
    want = alpha_bar64(betas)
    assert_within(ab, want, 2 * U32 * want, "alpha_bar vs float64 cumprod")
    prev = np.concatenate([[1.0], want[:-1]])
    assert_within(s.alpha_bar_prev, prev, 2 * U32 * prev, "alpha_bar_prev (with alpha_bar_prev[0] = 1)")


@settings(PROPS, max_examples=100)
@given(betas=any_betas)
def test_derived_coefficients_match_their_definitions(betas):
    """Every other stored coefficient equals its float64 definition (α = 1−β, √ᾱ, √(1−ᾱ), SNR = ᾱ/(1−ᾱ),
    log SNR) to one float32 rounding of the float64 value: relative 2·U32 (absolute for log SNR, which can be ~0)."""
    s = Schedule(betas)
    ab = alpha_bar64(betas)
    want = {"beta": betas, "alpha": 1 - betas, "sqrt_alpha_bar": np.sqrt(ab), "sqrt_one_minus_alpha_bar": np.sqrt(1 - ab),
            "snr": ab / (1 - ab)}
    for name, w in want.items():
        assert_within(getattr(s, name), w, 2 * U32 * np.abs(w), name)
    log_snr = np.log(ab) - np.log1p(-ab)
    assert_within(s.log_snr, log_snr, 2 * U32 * np.maximum(np.abs(log_snr), 1), "log_snr")


@settings(PROPS, max_examples=150)
@given(betas=any_betas)
def test_posterior_variance_is_at_most_beta(betas):
    """β̃_t = (1−ᾱ_{t−1})/(1−ᾱ_t) · β_t ≤ β_t (DDPM Eq. 7; the factor is < 1 because ᾱ_{t−1} > ᾱ_t), with β̃_1 = 0
    since ᾱ_0 = 1, β̃_t > 0 after it, and β̃ equal to the float64 formula to 2·U32 relative."""
    s = Schedule(betas)
    bt, b = s.beta_tilde.double(), s.beta.double()
    assert bool((bt <= b * (1 + 1e-6)).all()), f"beta_tilde > beta at t = {int((bt > b * (1 + 1e-6)).nonzero()[0])}"
    assert abs(bt[0].item()) <= 1e-7 * b[0].item(), f"beta_tilde[0] = {bt[0].item()!r}, should be 0 (alpha_bar_prev[0] = 1)"
    assert bool((bt[1:] > 0).all()), "beta_tilde must be > 0 for t >= 1"
    ab = alpha_bar64(betas)
    prev = np.concatenate([[1.0], ab[:-1]])
    want = (1 - prev) / (1 - ab) * betas
    assert_within(bt, want, 2 * U32 * want + 1e-30, "beta_tilde vs float64 Eq. 7")


# ---------------------------------------------------------------------------------------------------------------
# 3. The forward posterior q(x_{t-1} | x_t, x_0), Eq. 6-7
# ---------------------------------------------------------------------------------------------------------------

@st.composite
def schedule_and_steps(draw):
    "(betas, t as a list of code steps, one per item, and the batch shape (b, c, h, w))."
    b = draw(any_betas)
    shape = draw(image_shape())
    t = draw(st.lists(st.integers(0, len(b) - 1), min_size=shape[0], max_size=shape[0]))
    return b, t, shape


@settings(PROPS, max_examples=100)
@given(case=schedule_and_steps(), data=st.data())
def test_q_posterior_is_eq7(case, data):
    """q(x_{t−1} | x_t, x_0) = N(c0·x_0 + ct·x_t, β̃_t) with c0 = √ᾱ_{t−1} β_t/(1−ᾱ_t), ct = √α_t (1−ᾱ_{t−1})/(1−ᾱ_t)
    (DDPM Eq. 6-7, all in float64 here). The weights are read off by feeding (x0, x_t) = (1, 0) and (0, 1); then random
    x0, x_t must give the linear combination, and noise-free x_t = √ᾱ_t x_0 the mean √ᾱ_{t−1} x_0 (c0 + ct√ᾱ_t = √ᾱ_{t−1}).
    Tolerance: each output is a sum of two float32 products of float32-rounded coefficients, so a few U32 relative to
    the sum of the terms' magnitudes."""
    betas, t, shape = case
    s = Schedule(betas)
    ab = alpha_bar64(betas)
    prev = np.concatenate([[1.0], ab[:-1]])
    tt = np.array(t)
    c0 = per_item(np.sqrt(prev[tt]) * betas[tt] / (1 - ab[tt]), 4)
    ct = per_item(np.sqrt(1 - betas[tt]) * (1 - prev[tt]) / (1 - ab[tt]), 4)
    var = per_item((1 - prev[tt]) / (1 - ab[tt]) * betas[tt], 4)
    t_tensor = torch.tensor(t)
    ones, zeros = torch.ones(shape), torch.zeros(shape)

    mean, v = q_posterior(ones, zeros, t_tensor, s)
    assert_within(mean, np.broadcast_to(c0, shape), 4 * U32 * c0, "posterior weight of x0")
    assert_within(v, var, 4 * U32 * var + 1e-30, "posterior variance beta_tilde")
    mean, _ = q_posterior(zeros, ones, t_tensor, s)
    assert_within(mean, np.broadcast_to(ct, shape), 4 * U32 * ct, "posterior weight of x_t")

    x0 = data.draw(images(shape, 3.0), label="x0")
    x_t = data.draw(images(shape, 5.0), label="x_t")
    mean, _ = q_posterior(torch.tensor(x0, dtype=torch.float32), torch.tensor(x_t, dtype=torch.float32), t_tensor, s)
    # the inputs are rounded to float32 too: that is one more U32 on each term
    assert_within(mean, c0 * x0 + ct * x_t, 6 * U32 * (c0 * np.abs(x0) + ct * np.abs(x_t)) + 1e-30, "posterior mean")

    sa, sa_prev = per_item(np.sqrt(ab[tt]), 4), per_item(np.sqrt(prev[tt]), 4)
    mean, _ = q_posterior(torch.tensor(x0, dtype=torch.float32), torch.tensor(sa * x0, dtype=torch.float32), t_tensor, s)
    assert_within(mean, sa_prev * x0, 8 * U32 * sa_prev * np.abs(x0) + 1e-30, "posterior mean of noise-free x_t")


# ---------------------------------------------------------------------------------------------------------------
# 4. ε, x₀ and v are three coordinates of the same x_t
# ---------------------------------------------------------------------------------------------------------------

DTYPES = [torch.float32, torch.float64]


@st.composite
def noised(draw):
    "betas, t, and x0, eps (float64 numpy, (b, c, h, w))."
    betas, t, shape = draw(schedule_and_steps())
    return betas, t, draw(images(shape, 3.0)), draw(images(shape, 4.0))


# Tolerances. The library's coefficients √ᾱ_t and √(1−ᾱ_t) are float32-rounded (relative U32 each), and with
# float32 tensors every product and sum rounds once more. So x_t = √ᾱ x0 + √(1−ᾱ) ε is exact to a few U32 times
# M = √ᾱ|x0| + √(1−ᾱ)|ε|, and undoing it divides that error by the coefficient solved for: recovering ε from
# (x_t, x0) has condition number 1/√(1−ᾱ_t) (large at small t), recovering x0 from (x_t, ε) 1/√ᾱ_t (large at large t).
# The v-parametrisation is a rotation, (x_t, v) = R(x0, ε), so recovering x0 or ε from (x_t, v) is well conditioned:
# a few U32 times |x0| + |ε| (this includes √ᾱ² + √(1−ᾱ)² = 1 holding only to float32 rounding). K = 8 "a few".
K = 8


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@settings(PROPS, max_examples=60)
@given(case=noised())
def test_eps_x0_v_conversions_are_inverses(dtype, case):
    """x_t = √ᾱ_t x0 + √(1−ᾱ_t) ε (DDPM Eq. 4) and v = √ᾱ_t ε − √(1−ᾱ_t) x0 (Salimans & Ho 2022) against float64;
    then eps_from_x0 and x0_from_eps (Eq. 15) recover ε and x0 from x_t, and x0_from_v, eps_from_v recover them from
    (x_t, v). Each function keeps the input dtype. Tolerances: see the comment above (condition number × K·U32)."""
    betas, t, x0, eps = case
    s = Schedule(betas)
    ab = alpha_bar64(betas)[np.array(t)]
    sa, s1 = per_item(np.sqrt(ab), 4), per_item(np.sqrt(1 - ab), 4)
    X0, EPS, T_ = torch.tensor(x0, dtype=dtype), torch.tensor(eps, dtype=dtype), torch.tensor(t)
    M = sa * np.abs(x0) + s1 * np.abs(eps)
    R = np.abs(x0) + np.abs(eps)
    tiny = 1e-30

    x_t = q_sample(X0, T_, EPS, s)
    assert x_t.dtype == dtype
    assert_within(x_t, sa * x0 + s1 * eps, K * U32 * M + tiny, "q_sample vs float64 Eq. 4")
    v = v_from_x0_eps(X0, EPS, T_, s)
    assert v.dtype == dtype
    assert_within(v, sa * eps - s1 * x0, K * U32 * R + tiny, "v vs float64")

    got = eps_from_x0(x_t, T_, X0, s)
    assert got.dtype == dtype
    assert_within(got, eps, K * U32 * M / s1 + tiny, "eps_from_x0(q_sample(x0, eps)) == eps")
    got = x0_from_eps(x_t, T_, EPS, s)
    assert got.dtype == dtype
    assert_within(got, x0, K * U32 * M / sa + tiny, "x0_from_eps(q_sample(x0, eps)) == x0")
    got = x0_from_v(x_t, T_, v, s)
    assert got.dtype == dtype
    assert_within(got, x0, K * U32 * R + tiny, "x0_from_v(x_t, v) == x0")
    got = eps_from_v(x_t, T_, v, s)
    assert got.dtype == dtype
    assert_within(got, eps, K * U32 * R + tiny, "eps_from_v(x_t, v) == eps")


@settings(PROPS, max_examples=40)
@given(case=noised())
def test_convert_prediction_between_every_pair(case):
    """convert_prediction(true src quantity, src → dst) is the true dst quantity, for each of the 9 (src, dst) pairs
    of "eps", "x0", "v" (float64 inputs). Tolerance: K·U32 · (|x0| + |ε|) times the condition number of the source:
    1 + 1/√ᾱ_t from ε (x0 is solved for), 1 + 1/√(1−ᾱ_t) from x0 (ε is solved for), 1 from v (a rotation)."""
    betas, t, x0, eps = case
    s = Schedule(betas)
    ab = alpha_bar64(betas)[np.array(t)]
    sa, s1 = per_item(np.sqrt(ab), 4), per_item(np.sqrt(1 - ab), 4)
    truth = {"eps": eps, "x0": x0, "v": sa * eps - s1 * x0}
    x_t = torch.tensor(sa * x0 + s1 * eps)
    cond = {"eps": 1 + 1 / sa, "x0": 1 + 1 / s1, "v": 1.0}
    R = np.abs(x0) + np.abs(eps)
    for src in PREDICTIONS:
        for dst in PREDICTIONS:
            got = convert_prediction(torch.tensor(truth[src]), x_t, torch.tensor(t), s, src=src, dst=dst)
            assert_within(got, truth[dst], K * U32 * R * cond[src] + 1e-30, f"convert_prediction {src} -> {dst}")


# ---------------------------------------------------------------------------------------------------------------
# 5. DDIM with η = 0 and the oracle denoiser of a one-point data set is exact
# ---------------------------------------------------------------------------------------------------------------
# With data = {x0*}, the optimal noise prediction is ε*(x_t, t) = (x_t − √ᾱ_t x0*)/√(1−ᾱ_t): x̂_0 = x0* exactly at every
# step, and deterministic DDIM (Song et al. 2021, Eq. 12 with σ = 0) moves along x_t = √ᾱ_t x0* + √(1−ᾱ_t) ε0, ε0 the
# oracle noise of the starting point, reaching x0* at the end.
#
# Tolerance, computed step by step alongside the run (elementwise; sa, s1 = √ᾱ, √(1−ᾱ) at the current step t, sa', s1'
# at the next one t', ε̂ the float32 oracle output at the current float32 x):
#   x̂_0 = (x − s1 ε̂)/sa rounds a few times, each relative to sa|x0*| or s1|ε̂|, and is divided by sa:
#       |x̂_0 − x0*| ≤ L = K·U32·(sa|x0*| + s1|ε̂|)/sa          (the 1/sa: x0 from a noisy x_t is ill-conditioned at large t)
#   an error d already in x is read by the oracle as noise, ε̂ = ε0 + d/s1, and the step scales it by s1'/s1 < 1:
#       |x' − (sa' x0* + s1' ε0)| ≤ D' = sa'·L + (s1'/s1)·D + K·U32·(sa'|x0*| + s1'|ε̂|),   D = 0 at the start
#   (with clipping, ε is re-derived from the clipped x̂_0, which moves x' by at most (s1' sa/s1)·L more).
# D starts at the float64 rounding of the test's own √ᾱ x0* + √(1−ᾱ) ε0, which reproduces the float32 start only so far.
# These bounds take the schedule's coefficients as accurate to float32 rounding, which its stored √ᾱ and √(1−ᾱ) are.
# The schedules keep ᾱ_T ≥ 1e-4, so that the bound on x̂_0 at the first step, ∝ 1/√ᾱ, still says something.

ddim_betas = drawn_betas(max_T=300, min_alpha_bar=1e-4)


def root(ab, t):
    "(√ᾱ_t, √(1−ᾱ_t)) in float64 for code step t, with ᾱ = 1 at t = −1 (the clean data)."
    return (1.0, 0.0) if t == -1 else (math.sqrt(ab[t]), math.sqrt(1 - ab[t]))


def oracle_eps64(x, t, x0_star, ab):
    "ε*(x_t, t) in float64 numpy for code step t (an int), with the test's float64 ᾱ."
    sa, s1 = root(ab, t)
    return (x - sa * x0_star) / s1


U64 = 2.0 ** -53


def start_bound(t, x0_star, eps0, ab):
    "D at the first step: the test's float64 reconstruction of the starting point is exact to a few U64."
    sa, s1 = root(ab, t)
    return 4 * U64 * (sa * np.abs(x0_star) + s1 * np.abs(eps0))


def ddim_bounds(t, t_prev, x0_star, eps_hat, D, ab, clip=False):
    "(L, D'): the bounds above on |x̂_0 − x0*| and on x_{t_prev}'s distance from the exact trajectory."
    (sa, s1), (sap, s1p) = root(ab, t), root(ab, t_prev)
    L = K * U32 * (sa * np.abs(x0_star) + s1 * np.abs(eps_hat)) / sa + 1e-30
    D_prev = sap * L + (s1p / s1) * D + K * U32 * (sap * np.abs(x0_star) + s1p * np.abs(eps_hat))
    return L, D_prev + (s1p * sa / s1) * L if clip else D_prev


@st.composite
def ddim_case(draw):
    "betas, the decreasing visited steps, x0* and the starting x (float64 numpy)."
    betas = draw(ddim_betas)
    T = len(betas)
    if draw(st.booleans()):
        n = draw(st.integers(1, min(T, 60)))
        steps = timesteps(n, T, draw(st.sampled_from(SPACINGS)), Schedule(betas)).tolist()
    else:
        steps = sorted(draw(st.sets(st.integers(0, T - 1), min_size=1, max_size=min(T, 60))), reverse=True)
    shape = draw(image_shape())
    return betas, steps, draw(images(shape, 3.0)), draw(images(shape, 4.0))


@settings(PROPS, max_examples=60)
@given(case=ddim_case())
def test_ddim_step_with_oracle_is_exact(case):
    """ddim_step with η = 0 and the oracle ε* of a one-point data set x0* (float32 tensors), through any decreasing
    subsequence of steps ending with t_prev = −1: every x̂_0 is x0*, every x_prev is √ᾱ_prev x0* + √(1−ᾱ_prev) ε0
    (the deterministic DDIM trajectory, Song et al. 2021 Eq. 12), and the last one is x0*. Tolerance: see above."""
    betas, steps, x0_star, x_start = case
    s = Schedule(betas)
    ab = alpha_bar64(betas)
    x = torch.tensor(x_start, dtype=torch.float32)
    eps0 = oracle_eps64(x.double().numpy(), steps[0], x0_star, ab)
    D, checks = start_bound(steps[0], x0_star, eps0, ab), []
    for t, t_prev in zip(steps, steps[1:] + [-1]):
        eps_pred = torch.tensor(oracle_eps64(x.double().numpy(), t, x0_star, ab), dtype=torch.float32)
        L, D = ddim_bounds(t, t_prev, x0_star, eps_pred.double().numpy(), D, ab)
        x, x0_hat = ddim_step(eps_pred, t, t_prev, x, s, eta=0.)
        assert x.dtype == torch.float32 and x.shape == x0_star.shape
        sap, s1p = root(ab, t_prev)
        checks += [(x0_hat, x0_star, L, f"x0_hat at t={t}"),
                   (x, sap * x0_star + s1p * eps0, D, f"x_prev at t={t} -> {t_prev}")]
    checks.append((x, x0_star, D, "DDIM's final sample"))
    target(worst_ratio(checks))
    for c in checks: assert_within(*c)


class OracleDenoiser(nn.Module):
    "ε*(x_t, t) = (x_t − √ᾱ_t x0*)/√(1−ᾱ_t): the optimal noise predictor when the data is the single point x0*."
    def __init__(self, x0_star, ab):
        super().__init__()
        self.x0_star, self.ab = torch.as_tensor(x0_star, dtype=torch.float64), torch.as_tensor(ab, dtype=torch.float64)

    def forward(self, x, t):
        ab = self.ab[t].view(-1, *[1] * (x.ndim - 1))
        return ((x.double() - ab.sqrt() * self.x0_star) / (1 - ab).sqrt()).to(x.dtype)


@settings(PROPS, max_examples=40)
@given(betas=ddim_betas, data=st.data())
def test_sample_ddim_with_oracle_is_exact(betas, data):
    """sample(..., sampler="ddim", eta=0.) with the oracle nn.Module, from a given x_T at the first visited step,
    with any n_steps, spacing and clipping: the output is x0*, and the recorded trajectory is
    x_t = √ᾱ_t x0* + √(1−ᾱ_t) ε0 at every visited t, with x̂_0 = x0* (Song et al. 2021 Eq. 12). With clip=True the
    point lies in [-1, 1], where clipping x̂_0 = x0* changes nothing. Tolerance: as for ddim_step, step by step."""
    T = len(betas)
    n = data.draw(st.integers(1, min(T, 60)), label="n_steps")
    spacing = data.draw(st.sampled_from(SPACINGS), label="spacing")
    clip = data.draw(st.booleans(), label="clip")
    shape = data.draw(image_shape(), label="shape")
    x0_star = data.draw(images(shape, 1.0 if clip else 3.0), label="x0_star")
    x_T = torch.tensor(data.draw(images(shape, 4.0), label="x_T"), dtype=torch.float32)
    s = Schedule(betas)
    ab = alpha_bar64(betas)
    model = OracleDenoiser(x0_star, ab)
    steps = timesteps(n, T, spacing, s).tolist()
    eps0 = oracle_eps64(x_T.double().numpy(), steps[0], x0_star, ab)
    out, traj = sample(model, shape, s, sampler="ddim", n_steps=n, eta=0., spacing=spacing, clip=clip, x_T=x_T,
                       return_trajectory=True, trajectory_every=1, progress=False)
    assert out.dtype == torch.float32 and tuple(out.shape) == shape
    assert traj["t"] == steps
    D, checks = start_bound(steps[0], x0_star, eps0, ab), []
    for i, (t, t_prev) in enumerate(zip(steps, steps[1:] + [-1])):
        x = traj["x_t"][i]
        sa, s1 = root(ab, t)
        checks.append((x, sa * x0_star + s1 * eps0, D, f"x_t at t={t}"))
        eps_hat = model(x, torch.full((shape[0],), t)).double().numpy()
        L, D = ddim_bounds(t, t_prev, x0_star, eps_hat, D, ab, clip)
        checks.append((traj["x0_hat"][i], x0_star, L, f"x0_hat at t={t}"))
    checks.append((out, x0_star, D, "sample()'s output"))
    target(worst_ratio(checks))
    for c in checks: assert_within(*c)


@settings(PROPS, max_examples=200)
@given(T=st.integers(1, 1000), data=st.data())
def test_timesteps_are_distinct_and_decreasing(T, data):
    """timesteps(n, T, spacing) is n distinct, strictly decreasing code steps in [0, T−1] for every 1 ≤ n ≤ T and
    every spacing; "trailing" starts at T−1, and "linspace" and "karras" with n ≥ 2 run from T−1 to 0 (the paper's t = T to t = 1).
    (linspace with n = 1 visits t = 0 only, np.linspace's and diffusers' convention, so it is not asserted here.)"""
    n = data.draw(st.integers(1, T), label="n")
    spacing = data.draw(st.sampled_from(SPACINGS), label="spacing")
    ts = timesteps(n, T, spacing, Schedule(torch.linspace(1e-4, 0.02, T, dtype=torch.float64)))
    assert ts.dtype == torch.long and ts.shape == (n,)
    assert int(ts.min()) >= 0 and int(ts.max()) <= T - 1
    assert bool((ts[1:] < ts[:-1]).all())
    if spacing == "trailing" or (spacing == "linspace" and n > 1): assert int(ts[0]) == T - 1
    if spacing in ("linspace", "karras") and n > 1: assert int(ts[0]) == T - 1 and int(ts[-1]) == 0
