"""Q15: the generic aggregator f(Σ g(h)) implementing the mean exactly and the max approximately."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import jraph  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from jaxhw import graphs as gr  # noqa: E402
from jaxhw import expressiveness as ex  # noqa: E402
from jaxhw.report import RunContext, code_block, fmt, md_table, source_of  # noqa: E402


def _random_batch(rng: np.random.Generator, num_graphs: int, n_max: int, C: float, dim: int):
    graphs = [ex.random_connected_graph(rng, 1, n_max) for _ in range(num_graphs)]
    gts = [gr.from_networkx(G, node_features=rng.uniform(-C, C, (G.number_of_nodes(), dim))) for G in graphs]
    gts.append(gr.from_networkx(ex.with_features(ex.nx.empty_graph(1)), node_features=np.zeros((1, dim))))  # isolated node
    n = sum(int(g.n_node[0]) for g in gts)
    e = sum(int(g.n_edge[0]) for g in gts)
    return gr.pad_to(gts, n + 8, e + 8, len(gts) + 2)


def run(ctx: RunContext) -> None:
    rng = np.random.default_rng(ctx.seed)
    C, dim = 1.0, 3
    num_graphs = 40 if ctx.quick else 200
    batch = _random_batch(rng, num_graphs, 12, C, dim)
    h = batch.nodes
    msgs, recv, N = h[batch.senders], batch.receivers, h.shape[0]
    node_mask = np.asarray(gr.padding_masks(batch)[0])
    senders, receivers = np.asarray(batch.senders), np.asarray(batch.receivers)
    hn = np.asarray(h)
    neigh = [senders[receivers == v] for v in range(N)]
    degrees = np.array([len(x) for x in neigh])

    # (a) mean, three ways
    ours = np.asarray(jax.jit(gr.mean_aggregator, static_argnums=2)(msgs, recv, N))
    theirs = np.asarray(jraph.segment_mean(msgs, recv, N))
    loop = np.stack([hn[x].mean(0) if len(x) else np.zeros(dim) for x in neigh])
    err_mean_jraph = float(np.abs(ours - theirs).max())
    err_mean_loop = float(np.abs(ours - loop).max())

    # (b) approximate max: error vs p, against the bound log(n)/p
    ps = [0.5, 1, 2, 4, 8, 16, 32, 40] if ctx.quick else [0.25, 0.5, 1, 2, 4, 8, 16, 24, 32, 40]
    true_max = np.stack([hn[x].max(0) if len(x) else np.zeros(dim) for x in neigh])
    has = (degrees > 0) & node_mask
    rows, worst, bound_worst, holds = [], [], [], True
    for p in ps:
        approx = np.asarray(gr.approx_max_aggregator(p, C)(msgs, recv, N))
        err = (approx - true_max)[has]  # ≥ 0 up to float32 rounding
        bound = gr.approx_max_error_bound(p, degrees[has])[:, None]
        holds &= bool(np.all(err >= -1e-5) and np.all(err <= bound + 1e-5))
        worst.append(float(err.max()))
        bound_worst.append(float(bound.max()))
        rows.append([fmt(p, 2), fmt(err.mean(), 4), fmt(err.max(), 4), fmt(bound.max(), 4), str(bool(np.all(err <= bound + 1e-5)))])

    # equal neighbours make the bound tight: n copies of the same value → error exactly log(n)/p
    n_tight, p_tight = 5, 4.0
    tight = float(gr.approx_max_aggregator(p_tight, C)(jnp.full((n_tight, 1), 0.3), jnp.zeros(n_tight, jnp.int32), 1)[0, 0]) - 0.3

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    ax.loglog(ps, worst, "o-", label="max error over nodes (this run)")
    ax.loglog(ps, bound_worst, "k--", label=r"bound $\log(\Delta)/p$, $\Delta$ = max degree")
    ax.set_xlabel("sharpness p")
    ax.set_ylabel(r"$f(\sum g) - \max$")
    ax.set_title(f"log-sum-exp max on {num_graphs} random graphs, h ∈ [−{C:g}, {C:g}]")
    ax.legend(fontsize=8)
    fig_path = ctx.save_figure(fig, "approx_max_error")

    # empty neighbourhoods (isolated node + padding): finite values and gradients for every aggregator
    aggs = {
        "segment_max_safe": gr.segment_max_safe,
        "mean (generic)": gr.mean_aggregator,
        "approx max (generic, p=8)": gr.approx_max_aggregator(8.0, C),
        "jraph.segment_max": jraph.segment_max,
    }
    empty_rows = []
    finite_ours = True
    for name, agg in aggs.items():
        val = agg(msgs, recv, N)
        grad = jax.grad(lambda x, a=agg: jnp.sum(a(x, recv, N)))(msgs)
        empty_val = np.asarray(val)[degrees == 0]
        ok_v, ok_g = bool(np.all(np.isfinite(val))), bool(np.all(np.isfinite(grad)))
        if not name.startswith("jraph"):
            finite_ours &= ok_v and ok_g
        empty_rows.append([name, int((degrees == 0).sum()), str(np.unique(empty_val)[:3]), str(ok_v), str(ok_g)])

    # one compiled program for batches of different content (padding to a fixed budget)
    step = jax.jit(lambda g: gr.readout(g, gr.message_passing(g, g.nodes, gr.segment_max_safe), gr.segment_sum))
    for _ in range(3):
        graphs = [ex.random_connected_graph(rng, 2, 6) for _ in range(int(rng.integers(1, 5)))]
        step(gr.pad_to([gr.from_networkx(G, node_features=np.ones((G.number_of_nodes(), dim))) for G in graphs], 32, 96, 6))
    compiles_padded = step._cache_size()

    ctx.save_json("aggregation", {
        "num_graphs": num_graphs, "C": C, "mean_err_vs_jraph": err_mean_jraph, "mean_err_vs_loop": err_mean_loop,
        "p": ps, "max_err": worst, "bound": bound_worst, "bound_holds": holds, "tight_case_error": tight,
        "tight_case_bound": float(gr.approx_max_error_bound(p_tight, n_tight)), "finite_everywhere": finite_ours,
        "compiles_for_3_padded_batches": compiles_padded,
    })

    body = f"""
**Setting.** Messages are the neighbours' features $h_u\\in[-C,C]^m$ ($C={fmt(C, 1)}$, $m={dim}$) on
{num_graphs} random connected graphs of up to 12 nodes plus an isolated node and padding, batched in one
`jraph.GraphsTuple`. Every aggregator has jraph's signature `(data, segment_ids, num_segments)`;
`generic_aggregator(f, g)` returns $h\\mapsto f\\big(\\sum_{{u\\in\\mathcal N(v)}} g(h_u)\\big)$.

**(a) Mean.** $f$ sees only the sum, so $g$ must carry the neighbour count:

$$g(h) = (h,\\ 1)\\in\\mathbb R^{{m+1}},\\qquad f(s, c) = s / c\\quad(\\text{{and }} 0 \\text{{ if }} c=0),$$

so $f(\\sum_u g(h_u)) = \\big(\\sum_u h_u\\big)/|\\mathcal N(v)|$ exactly. On this run's batch the largest
difference from `jraph.segment_mean` is {fmt(err_mean_jraph, 3)} and from a Python loop over neighbours
{fmt(err_mean_loop, 3)} (float32).

{code_block(source_of(gr.mean_g) + chr(10) + chr(10) + source_of(gr.mean_f))}

**(b) Approximate max.** $\\max_u h_u = \\log \\|e^{{h}}\\|_\\infty$ and the $\\ell_p$ norm of the *positive* vector
$(e^{{h_u}})_u$ tends to its $\\ell_\\infty$ norm — the exponential removes the trouble with absolute
values of negative features. Shifting by $C$ keeps every exponent $\\le 0$:

$$g_p(h) = \\big(e^{{p(h-C)}},\\ 1\\big),\\qquad f_p(s, c) = C + \\tfrac1p \\log s \\ \\ (c>0),\\qquad f_p(\\cdot,0)=0 .$$

With $n=|\\mathcal N(v)|$ and $M=\\max_u h_u$ (per coordinate), $e^{{p(M-C)}} \\le \\sum_u e^{{p(h_u-C)}} \\le n\\,e^{{p(M-C)}}$, hence

$$M \\;\\le\\; f_p\\Big(\\sum_u g_p(h_u)\\Big) \\;\\le\\; M + \\frac{{\\log n}}{{p}} \\xrightarrow[p\\to\\infty]{{}} M .$$

The bound is tight: {n_tight} equal neighbours with $p={fmt(p_tight, 0)}$ give error {fmt(tight, 4)} against
$\\log {n_tight}/{fmt(p_tight, 0)} = {fmt(gr.approx_max_error_bound(p_tight, n_tight), 4)}$. In float32, $e^{{p(h-C)}}\\ge e^{{-2pC}}$
must not underflow, so $2pC < 87$; the aggregator refuses larger $p$ with a clear error (use float64 for sharper).
Bound satisfied on every node and every $p$ of this run: **{holds}**.

{md_table(["p", "mean error", "max error", "max bound log(n)/p", "within bound"], rows)}

![approximate max error vs p]({fig_path})

**Empty neighbourhoods.** Isolated nodes and padding nodes have no neighbours. Every aggregator here
returns 0 there, with finite gradients (finite for all of ours: **{finite_ours}**); jraph's own max returns
$-\\infty$:

{md_table(["aggregator", "empty nodes", "values there", "finite values", "finite gradients"], empty_rows)}

**Batching.** `jaxhw.graphs.pad_to` (jraph's `batch` + `pad_with_graphs`) pads every batch to one
budget; three different padded batches ran through one jitted message-passing function with
{compiles_padded} compilation(s). Masks come from jraph's `get_*_padding_mask` (they work on current JAX);
`jaxhw.graphs.zero_out_padding` replaces jraph's broken one.
"""
    ctx.add_section("Q15", "Universal aggregation: mean and max from f(Σ g)", body)
