"""Part ``steepest-descent``: Q1–Q5 and Q11 — dual norms, steepest-descent steps, weight decay.

Thin: draws random problems, calls ``jaxhw.norms`` / ``jaxhw.linalg`` / ``jaxhw.optim`` and the
scipy references in ``jaxhw.norms``, and writes each answer with the errors measured in this run.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxhw import linalg, norms, optim
from jaxhw.report import RunContext, fmt, md_table

TOL_NUMERIC = 1e-4  # scipy vs closed form (float32 closed form, SLSQP/BFGS reference)
TOL_EXACT = 1e-5  # identities that hold to float32 rounding


def _verdict(err: float, tol: float) -> str:
    return "agrees" if norms.check_passed(err, tol) else "**does not agree**"


def run(ctx: RunContext) -> None:
    rng = np.random.default_rng(ctx.seed)
    key = jax.random.PRNGKey(ctx.seed)
    n_ref = 4 if ctx.quick else 20  # scipy-solved problems per check
    n_rand = 2000 if ctx.quick else 20000  # random draws for inequalities
    n, shape = 6, (4, 3)
    results: dict[str, dict] = {}
    f32 = lambda a: jnp.asarray(a, jnp.float32)

    # ---------------------------------------------------------------- Q1 dual norms
    q1 = {}
    for label, norm, kind, p in [("ℓ2", norms.L2, "lp", 2.0), ("ℓ∞", norms.LINF, "linf", 2.0), ("ℓ3", norms.lp(3), "lp", 3.0)]:
        errs = [abs(norms.reference_dual_norm(a, kind, p) - float(norm.dual(f32(a)))) for a in rng.standard_normal((n_ref, n))]
        q1[label] = max(errs)
    A, B = rng.standard_normal((2, n_rand, n))
    holder = max(
        float(jnp.max(jnp.sum(f32(A) * f32(B), 1) - jax.vmap(nm.dual)(f32(A)) * jax.vmap(nm.norm)(f32(B))))
        for nm in (norms.L2, norms.LINF, norms.L1, norms.lp(3))
    )
    results["Q1"] = {"max_abs_error": q1, "trials": n_ref, "holder_max_violation": holder, "holder_pairs": n_rand}
    rows = [[k, "‖a‖₂" if k == "ℓ2" else ("‖a‖₁" if k == "ℓ∞" else "ℓ1.5 norm of a"), fmt(v, 2), _verdict(v, TOL_NUMERIC)] for k, v in q1.items()]
    ctx.add_section("Q1", "Dual norms of ℓ2 and ℓ∞", rf"""
**Answer.** $\|a\|_2^\dagger = \|a\|_2$ and $\|a\|_\infty^\dagger = \|a\|_1$; in general
$\|\cdot\|_p^\dagger = \|\cdot\|_q$ with $1/p + 1/q = 1$.

**Derivation.** By Cauchy–Schwarz $a^\top b \le \|a\|_2\|b\|_2 = \|a\|_2$ on the unit sphere, with
equality at $b = a/\|a\|_2$. For $\ell_\infty$, $a^\top b = \sum_i a_i b_i \le \sum_i |a_i|\,\max_i|b_i| = \|a\|_1$
when $\|b\|_\infty = 1$, with equality at $b = \operatorname{{sign}}(a)$. (Hölder's inequality gives the
general $\ell_p$/$\ell_q$ pair, with maximiser $b_i \propto \operatorname{{sign}}(a_i)|a_i|^{{q-1}}$.)

**Check in this run.** For {n_ref} random $a \in \mathbb R^{n}$ per norm, the closed form is compared
with a direct numerical maximisation of $a^\top b$ over the unit ball (`jaxhw.norms.reference_dual_norm`:
a linear programme for $\ell_\infty$, SLSQP for $\ell_p$):

{md_table(["norm", "dual", "max abs error", "verdict"], rows)}

Hölder's inequality $\langle a, b\rangle \le \|a\|^\dagger\|b\|$ over {n_rand} random pairs for each of
ℓ1, ℓ2, ℓ3, ℓ∞: largest value of $\langle a,b\rangle - \|a\|^\dagger\|b\|$ = {fmt(holder, 2)}
({"never violated" if holder <= TOL_EXACT else "**violated**"}).
""")

    # ---------------------------------------------------------------- Q2 / Q3 steepest steps
    def step_check(norm, kind, p, draw, closed=None):
        gaps, perturb, closed_err = [], [], 0.0
        for _ in range(n_ref):
            g, lam = draw(), float(rng.uniform(0.3, 3.0))
            ours = norms.steepest_descent_step(f32(g), lam, norm)
            ref = norms.reference_steepest_step(g, lam, kind, p)
            obj = lambda d: float(norms.steepest_descent_objective(f32(g), f32(d), lam, norm))
            gaps.append(abs(obj(ours) - obj(ref)) / max(1.0, abs(obj(ref))))
            eps = 1e-2 * rng.standard_normal((64,) + g.shape)
            perturb.append(min(obj(np.asarray(ours) + e) for e in eps) - obj(ours))
            if closed is not None:
                closed_err = max(closed_err, float(jnp.max(jnp.abs(closed(f32(g), lam) - ours))))
        return {"objective_gap": max(gaps), "best_perturbation_gain": -min(perturb), "closed_form_vs_generic": closed_err}

    vec = lambda: rng.standard_normal(n)
    q2 = {
        "ℓ2": step_check(norms.L2, "l2", 2.0, vec, norms.l2_step),
        "ℓ∞": step_check(norms.LINF, "linf", 2.0, vec, norms.linf_step),
        "ℓ1": step_check(norms.L1, "l1", 2.0, vec),
        "ℓ3": step_check(norms.lp(3), "lp", 3.0, vec),
    }
    results["Q2"] = q2
    rows = [[k, fmt(v["objective_gap"], 2), fmt(v["best_perturbation_gain"], 2), _verdict(v["objective_gap"], TOL_NUMERIC)] for k, v in q2.items()]
    ctx.add_section("Q2", "Steepest descent in dual form", rf"""
**Claim.** $\arg\min_{{\Delta w}} [g^\top\Delta w + \tfrac\lambda2\|\Delta w\|^2] = -\frac{{\|g\|^\dagger}}{{\lambda}}\,\arg\max_{{\|t\|=1}} g^\top t$.

**Derivation.** Write $\Delta w = c\,t$ with $c = \|\Delta w\| \ge 0$ and $\|t\| = 1$. The objective is
$c\,g^\top t + \tfrac\lambda2 c^2$. For fixed $c$ it is smallest when $g^\top t$ is most negative, i.e.
$t = -t^\star$ with $t^\star = \arg\max_{{\|t\|=1}} g^\top t$ (by symmetry of the unit sphere), where
$g^\top t = -\|g\|^\dagger$ by definition of the dual norm. What remains, $-c\|g\|^\dagger + \tfrac\lambda2 c^2$,
is a parabola in $c$ minimised at $c = \|g\|^\dagger/\lambda$; the minimum value is $-(\|g\|^\dagger)^2/(2\lambda)$.

**Check in this run** (`jaxhw.norms.steepest_descent_step`, one generic function for every norm). For
{n_ref} random $(g \in \mathbb R^{n}, \lambda)$ per norm the step's objective is compared with the minimum
found by SLSQP on the epigraph form $\min g^\top\Delta + \tfrac\lambda2 s^2$ s.t. $\|\Delta\| \le s$
(`reference_steepest_step`), and 64 random perturbations (scale $10^{{-2}}$) of the step are tried:

{md_table(["norm", "max relative objective gap", "best gain of a perturbation (≤ 0 means none helped)", "verdict"], rows)}
""")

    adam_err, adam_trials = 0.0, 0
    params = {"w": jnp.zeros((5, 3)), "b": jnp.zeros(3)}
    adam, sign = optax.adam(1.0, b1=0.0, b2=0.0, eps=0.0), optim.sign_descent(1.0)
    sa, ss = adam.init(params), sign.init(params)
    for _ in range(n_ref * 5):
        grads = jax.tree.map(lambda x: f32(rng.standard_normal(x.shape)), params)
        ua, sa = adam.update(grads, sa)
        us, ss = sign.update(grads, ss)
        adam_err = max(adam_err, max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(ua), jax.tree.leaves(us))))
        adam_trials += 1
    results["Q3"] = {"l2_closed_vs_generic": q2["ℓ2"]["closed_form_vs_generic"], "linf_closed_vs_generic": q2["ℓ∞"]["closed_form_vs_generic"],
                     "adam_vs_sign_max_error": adam_err, "adam_steps": adam_trials}
    ctx.add_section("Q3", "Steepest descent under ℓ2 and ℓ∞", rf"""
**(a)** With $\|g\|_2^\dagger = \|g\|_2$ and $\arg\max_{{\|t\|_2=1}} g^\top t = g/\|g\|_2$, Eq. (3) gives
$\Delta w = -\frac{{\|g\|_2}}{{\lambda}}\frac{{g}}{{\|g\|_2}} = -\dfrac{{g}}{{\lambda}}$: plain gradient descent with step $1/\lambda$.

**(b)** With $\|g\|_\infty^\dagger = \|g\|_1$ and $\arg\max_{{\|t\|_\infty=1}} g^\top t = \operatorname{{sign}}(g)$:
$\Delta w = -\dfrac{{\|g\|_1}}{{\lambda}}\operatorname{{sign}}(g)$: every coordinate moves by the same amount.

**(c)** With $\beta_1 = \beta_2 = 0$, Adam's moments are $m_t = g_t$, $v_t = g_t^2$ (bias corrections are
$1 - 0^t = 1$), so with $\epsilon = 0$ the update is $-\eta\, g_t/\sqrt{{g_t^2}} = -\eta\operatorname{{sign}}(g_t)$ — the
direction of (b), without the $\|g\|_1/\lambda$ magnitude.

**Check in this run.** (a) and (b) closed forms (`l2_step`, `linf_step`) vs the generic Eq. (3) solver on the
{n_ref} problems of Q2: max abs difference {fmt(q2["ℓ2"]["closed_form_vs_generic"], 2)} (ℓ2) and
{fmt(q2["ℓ∞"]["closed_form_vs_generic"], 2)} (ℓ∞); both match the scipy minimum (table in Q2).
(c) `optax.adam(1, b1=0, b2=0, eps=0)` vs `jaxhw.optim.sign_descent(1)` over {adam_trials} consecutive
steps with random gradients on a (5, 3) matrix and a bias: max abs difference of the updates
{fmt(adam_err, 2)} ({_verdict(adam_err, TOL_EXACT)}).
""")

    # ---------------------------------------------------------------- Q4 spectral
    Gs = rng.standard_normal((n_ref,) + shape)
    dual_err = max(abs(norms.reference_dual_norm(G, "spectral") - float(linalg.nuclear_norm(f32(G)))) for G in Gs)
    G = f32(Gs[0])
    Ts = jax.random.normal(key, (n_rand,) + shape)
    Ts = Ts / jax.vmap(linalg.spectral_norm_exact)(Ts)[:, None, None]
    ineq = float(jnp.max(jnp.einsum("ij,kij->k", G, Ts)) - linalg.nuclear_norm(G))
    eq_err = max(abs(float(norms.inner(f32(G), linalg.orthogonalize(f32(G))) - linalg.nuclear_norm(f32(G)))) for G in Gs)
    spec = step_check(norms.SPECTRAL, "spectral", 2.0, lambda: rng.standard_normal(shape), norms.spectral_step)
    low_rank = f32(rng.standard_normal((5, 2)) @ rng.standard_normal((2, 4)))
    lr_step = norms.spectral_step(low_rank, 1.0)
    lr_sv = np.asarray(linalg.singular_values(lr_step))
    lr_rank = int(np.sum(lr_sv > 1e-4 * lr_sv[0]))
    lr_scale_err = float(np.max(np.abs(lr_sv[:lr_rank] - float(linalg.nuclear_norm(low_rank)))))
    results["Q4"] = {"dual_vs_numerical_max": dual_err, "random_T_max_excess": ineq, "random_T": n_rand, "equality_error": eq_err,
                     "step": spec, "rank2_5x4_step_singular_values": lr_sv}
    ctx.add_section("Q4", "Steepest descent under the spectral norm", rf"""
**(a)** Write $T = \tilde U\tilde\Sigma\tilde V^\top$ with $\tilde\Sigma \preceq I$ when $\|T\|_* = 1$. Then
$\operatorname{{tr}}(G^\top T) = \operatorname{{tr}}(V\Sigma U^\top\tilde U\tilde\Sigma\tilde V^\top) = \operatorname{{tr}}(\Sigma\, \hat U \tilde\Sigma \hat V^\top)$
with $\hat U = U^\top\tilde U$, $\hat V = V^\top\tilde V$ (cyclic trace), whose rows have norm ≤ 1. Hence
$\operatorname{{tr}}(G^\top T) = \sum_i \sigma_i \sum_j \hat U_{{ij}}\tilde\sigma_j\hat V_{{ij}} \le \sum_i\sigma_i \sum_j |\hat U_{{ij}}||\hat V_{{ij}}| \le \sum_i \sigma_i = \operatorname{{tr}}\Sigma$
(Cauchy–Schwarz on rows $i$). Equality holds at $T = UV^\top$, since $\operatorname{{tr}}(V\Sigma U^\top U V^\top) = \operatorname{{tr}}\Sigma$.
So $\|G\|_*^\dagger = \operatorname{{tr}}\Sigma$ (the nuclear norm) and $UV^\top$ is the argmax.

**(b)** Eq. (5) then gives $\Delta W = -\dfrac{{\operatorname{{tr}}\Sigma}}{{\lambda}}\, U V^\top$ (thin SVD; for a rank-deficient $G$ the
zero singular directions are dropped, which keeps $\|UV^\top\|_* = 1$ and the same objective).

**Check in this run** ({shape[0]}×{shape[1]} matrices):

{md_table(["check", "trials", "result", "verdict"], [
    ["tr Σ vs numerical max of tr(GᵀT) over the spectral ball (BFGS on semi-orthogonal T)", n_ref, fmt(dual_err, 2), _verdict(dual_err, TOL_NUMERIC)],
    ["max over random T with ‖T‖_*=1 of tr(GᵀT) − tr Σ", n_rand, fmt(ineq, 3), "≤ 0" if ineq <= TOL_EXACT else "**> 0**"],
    ["abs(tr(Gᵀ U Vᵀ) − tr Σ) (equality case)", n_ref, fmt(eq_err, 2), _verdict(eq_err, TOL_EXACT)],
    ["closed form −(tr Σ/λ)UVᵀ vs SLSQP minimum, relative objective gap", n_ref, fmt(spec["objective_gap"], 2), _verdict(spec["objective_gap"], TOL_NUMERIC)],
    ["best gain of 64 random perturbations of the step", n_ref, fmt(spec["best_perturbation_gain"], 2), "none helped" if spec["best_perturbation_gain"] <= TOL_EXACT else "**one helped**"],
    ["closed form vs generic Eq. (5) solver, max abs difference", n_ref, fmt(spec["closed_form_vs_generic"], 2), _verdict(spec["closed_form_vs_generic"], TOL_EXACT)],
])}

A rank-2 5×4 gradient (λ = 1) gives a step with singular values {", ".join(fmt(s, 3) for s in lr_sv)}: rank {lr_rank},
non-zero ones within {fmt(lr_scale_err, 2)} of tr Σ/λ = {fmt(float(linalg.nuclear_norm(low_rank)), 3)}, no NaN.
""")

    # ---------------------------------------------------------------- Q5 square loss
    d_in, d_out, n_data = 6, 3, 8
    grad_err, min_slack, tight_err = 0.0, np.inf, 0.0
    loss_grad = jax.jit(jax.grad(norms.square_loss))
    for i in range(n_rand // 20):
        k1, k2, k3, k4 = jax.random.split(jax.random.fold_in(key, i), 4)
        X = norms.normalized_inputs(k1, n_data, d_in)
        Y = jax.random.normal(k2, (n_data, d_out))
        W = jax.random.normal(k3, (d_out, d_in))
        D = jax.random.normal(k4, (d_out, d_in)) * 10.0 ** rng.uniform(-3, 1)
        Gq, lam = norms.square_loss_bound(W, X, Y)
        grad_err = max(grad_err, float(jnp.max(jnp.abs(Gq - loss_grad(W, X, Y)))))
        bound = norms.square_loss(W, X, Y) + norms.inner(Gq, D) + lam / 2 * linalg.spectral_norm_exact(D) ** 2
        min_slack = min(min_slack, float((bound - norms.square_loss(W + D, X, Y)) / bound))
    results["Q5"] = {"grad_max_error": grad_err, "min_relative_slack": min_slack, "trials": n_rand // 20, "lambda": d_in / d_out}
    ctx.add_section("Q5", "A quadratic upper bound for the square loss (bonus)", rf"""
**Answer.** $G = \nabla\mathcal L(W) = -\dfrac{{1}}{{n\,d_{{out}}}}\sum_i (y^{{(i)}} - Wx^{{(i)}})\,x^{{(i)\top}}$ and $\lambda = \dfrac{{d_{{in}}}}{{d_{{out}}}}$.

**Derivation.** With $r_i = y^{{(i)}} - Wx^{{(i)}}$, $\|r_i - \Delta W x^{{(i)}}\|^2 = \|r_i\|^2 - 2r_i^\top\Delta W x^{{(i)}} + \|\Delta W x^{{(i)}}\|^2$.
Averaging, the middle term is $-\frac{{1}}{{n d_{{out}}}}\sum_i r_i^\top \Delta W x^{{(i)}} = \operatorname{{tr}}(G^\top\Delta W)$ with $G$ above, and the last term is
bounded with $\|\Delta W x\|_2 \le \|\Delta W\|_*\|x\|_2 = \sqrt{{d_{{in}}}}\,\|\Delta W\|_*$: $\frac{{1}}{{2n d_{{out}}}}\sum_i d_{{in}}\|\Delta W\|_*^2 = \frac{{d_{{in}}}}{{2 d_{{out}}}}\|\Delta W\|_*^2$.
The bound is tight when every input lies along the top right-singular vector of $\Delta W$.

**Check in this run** (`jaxhw.norms.square_loss_bound`, $d_{{in}}={d_in}$, $d_{{out}}={d_out}$, $n={n_data}$, {n_rand // 20} random
$(W, \Delta W, \text{{data}})$ with $\|\Delta W\|$ over four decades): the largest entry of $|G - \nabla\mathcal L|$ with $\nabla\mathcal L$ from `jax.grad` is {fmt(grad_err, 2)}
({_verdict(grad_err, TOL_EXACT)}); smallest relative slack of the bound {fmt(min_slack, 3)}
({"the inequality held in every trial" if min_slack >= -TOL_EXACT else "**the inequality failed**"}).
""")

    # ---------------------------------------------------------------- Q11 weight decay
    comps, shapes = [], [(8, 5), (5, 8), (16, 3), (6, 6)]
    for i, shp in enumerate(shapes * max(1, n_ref // 2)):
        W = jax.random.normal(jax.random.fold_in(key, 1000 + i), shp)
        comps.append(linalg.compare_singular_systems(W, 0.999 * W))
    ratio_err = max(float(jnp.max(jnp.abs(c["sigma_ratio"] - 0.999))) for c in comps)
    align_min = min(float(jnp.min(jnp.minimum(c["u_align"], c["v_align"]))) for c in comps)
    verdicts = [linalg.weight_decay_verdict(c, 0.999, TOL_EXACT) for c in comps]
    scaled = all(v["singular_values_scaled"] for v in verdicts)
    kept = all(v["singular_vectors_kept"] for v in verdicts)
    # the same step through the optimizer: zero gradient, η·wd = 0.001
    W = jax.random.normal(key, (8, 5))
    opt = optim.orthogonal_descent(0.1, weight_decay=0.01)
    upd, _ = opt.update(jnp.zeros_like(W), opt.init(W), W)
    opt_err = float(jnp.max(jnp.abs(optax.apply_updates(W, upd) - 0.999 * W)))
    results["Q11"] = {"sigma_ratio_max_error": ratio_err, "min_singular_vector_alignment": align_min, "matrices": len(comps),
                      "optimizer_step_error": opt_err, "singular_values_scaled": scaled, "singular_vectors_kept": kept}
    ctx.add_section("Q11", "What weight decay does to the SVD", rf"""
**Answer.** $0.999\,W = \sum_i (0.999\,\sigma_i)\,u_i v_i^\top$ is again an SVD (the $u_i, v_i$ are still orthonormal and
$0.999\sigma_i \ge 0$ keeps the order), so one step multiplies **every singular value by 0.999** and leaves **every singular
vector unchanged** (unit vectors cannot absorb a scale; they are unique up to sign for distinct $\sigma_i$).
Repeated decay shrinks all directions by the same factor; only the gradient updates change the singular vectors.

**Check in this run** ({len(comps)} random matrices of shapes {", ".join("×".join(map(str, s)) for s in shapes)}):
$\max_i |\sigma_i(0.999W)/\sigma_i(W) - 0.999|$ = {fmt(ratio_err, 2)}; smallest $|\langle u_i, u_i'\rangle|$ or $|\langle v_i, v_i'\rangle|$ = {fmt(align_min, 6)}.
Verdict: singular values {"all scaled by 0.999" if scaled else "**not all scaled by 0.999**"}; singular vectors
{"unchanged up to sign" if kept else "**changed**"}. The same step taken by `jaxhw.optim.orthogonal_descent(0.1, weight_decay=0.01)`
with a zero gradient ($\eta\cdot wd = 0.001$) gives $0.999W$ to within {fmt(opt_err, 2)}.
""")
    ctx.save_json("steepest_descent", results)
