"""Q16–Q17: what MP-GNNs with generic / max / mean aggregation can compute, and chirality."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import networkx as nx  # noqa: E402
import numpy as np  # noqa: E402

from jaxhw import expressiveness as ex  # noqa: E402
from jaxhw import graphs as gr  # noqa: E402
from jaxhw.report import RunContext, fmt, md_table  # noqa: E402

LAYERS = ("fixed", "growing")


def _draw_pairs(pairs: dict[str, ex.GraphPair]):
    fig, axes = plt.subplots(len(pairs), 2, figsize=(7, 2.6 * len(pairs)))
    for row, pair in zip(axes, pairs.values()):
        for ax, G, label in zip(row, (pair.G1, pair.G2), (pair.label1, pair.label2)):
            colours = ["tab:red" if G.nodes[v][ex.FEATURE] == 0 else "tab:blue" for v in G.nodes]
            pos = {}
            for i, comp in enumerate(nx.connected_components(G)):  # lay out each component side by side
                sub = nx.kamada_kawai_layout(G.subgraph(comp)) if len(comp) > 1 else {next(iter(comp)): np.zeros(2)}
                pos.update({v: xy + np.array([2.5 * i, 0.0]) for v, xy in sub.items()})
            nx.draw(G, pos, ax=ax, node_color=colours, node_size=90 if G.number_of_nodes() > 12 else 200)
            truth = f" — answer {pair.problem(G)}" if pair.problem else ""
            ax.set_title(f"{label}{truth}", fontsize=9)
    fig.suptitle("Q16 pairs (red = marked node, feature 0)", fontsize=10)
    fig.tight_layout()
    return fig


def run(ctx: RunContext) -> None:
    rng = np.random.default_rng(ctx.seed)
    num_graphs = 40 if ctx.quick else 200
    num_draws = 64 if ctx.quick else 256
    n_max, T_fixed, T_probe = 12, 3, 3

    # ---- hand-built GNNs on random graphs
    graphs = []
    for _ in range(num_graphs):
        G = ex.random_connected_graph(rng, 1, n_max)
        graphs.append(ex.with_features(G, marked=int(rng.integers(G.number_of_nodes()))))
    gts = [ex.to_graphs_tuple(G) for G in graphs]
    batch = gr.pad_to(gts, sum(G.number_of_nodes() for G in graphs) + 1, sum(2 * G.number_of_edges() for G in graphs) + 1, num_graphs + 1)
    count_ok = bool(np.array_equal(np.asarray(ex.node_count_gnn(batch))[:num_graphs], [G.number_of_nodes() for G in graphs]))
    ecc_true = np.array([ex.eccentricity_of_marked(G) for G in graphs])
    ecc_ok, ecc_rows = {}, []
    for kind in ex.KINDS:
        for readout in ex.READOUTS:
            out = np.asarray(ex.eccentricity_gnn(batch, kind=kind, readout=readout, num_layers=n_max, bound=n_max, max_deg=n_max - 1))[:num_graphs]
            ecc_ok[kind, readout] = bool(np.array_equal(out, ecc_true))
            ecc_rows.append([kind, readout, n_max, int(np.sum(out == ecc_true)), num_graphs, str(ecc_ok[kind, readout])])
    short = np.asarray(ex.eccentricity_gnn(batch, kind="max", readout="multiset", num_layers=2, bound=n_max, max_deg=n_max - 1))[:num_graphs]
    truncated_ok = bool(np.array_equal(short, np.minimum(ecc_true, 2)))

    # ---- counterexamples and controls with random GNNs
    pairs = ex.counterexample_pairs(T_fixed)
    evidence = {(k, r): ex.probe_pairs(pairs, k, r, T_probe, num_draws, ctx.seed) for k in ex.KINDS for r in ex.READOUTS}
    probe_rows = []
    for (k, r), evs in evidence.items():
        for name, ev in evs.items():
            if pairs[name].problem is None:
                verdict = "control ✓" if ex.is_valid_control(ev) else "not separated"
            else:
                verdict = "counterexample" if ex.is_counterexample(ev) else "separated" if ev.gnn_separate else "—"
            probe_rows.append([pairs[name].name, k, r, f"{ev.true1}, {ev.true2}" if ev.true1 is not None else "(control)",
                               str(ev.wl_identical), fmt(ev.max_gap, 2), fmt(ev.median_gap, 2), verdict])

    refuted = lambda k, r, names: any(ex.is_counterexample(evidence[k, r][n]) for n in names)  # noqa: E731
    grid_rows, answers = [], {}
    for k in ex.KINDS:
        for r in ex.READOUTS:
            for layers in LAYERS:
                a = ex.decide(solved=count_ok and (r == "multiset" or k == "generic"), refuted=refuted(k, r, ["a_pool"]))
                b = ex.decide(solved=layers == "growing" and ecc_ok[k, r], refuted=layers == "fixed" and refuted(k, r, ["b_fixed"]))
                c = ex.decide(solved=False, refuted=refuted(k, r, ["c_cycles"]) and refuted(k, r, ["c_cubic"]))
                answers[k, r, layers] = (a, b, c)
                grid_rows.append([k, r, layers, a, b, c])
    controls_ok = all(ex.is_valid_control(evidence[k, r]["control_marked"]) for k in ex.KINDS for r in ex.READOUTS) and all(
        ex.is_valid_control(evidence["generic", r]["control_plain"]) for r in ex.READOUTS)
    fig_path = ctx.save_figure(_draw_pairs(pairs), "q16_pairs")

    ctx.save_json("expressiveness", {
        "node_count_exact": count_ok, "eccentricity_exact": {f"{k}/{r}": v for (k, r), v in ecc_ok.items()},
        "truncated_T2_equals_min_ecc_2": truncated_ok, "controls_ok": controls_ok,
        "answers": {f"{k}/{r}/{l}": v for (k, r, l), v in answers.items()},
        "probes": [[*row] for row in probe_rows],
    })

    L = 2 * T_fixed + 2
    body = f"""
An MP-GNN of a given *kind* uses AGGREGATE ∈ {{generic $f(\\sum g)$, max, mean}}. Two conventions are left
open by the problem set, and the answers depend on them:

* **READOUT** — `multiset`: any function of the multiset of final node features (we use
  $\\rho(\\sum_v\\varphi(h_v))$); `same`: pooling with the AGGREGATE operation itself, then a map.
* **Layers** — `fixed`: the number $T$ is chosen before seeing the graph; `growing`: $T$ may depend on
  the graph (e.g. $T\\ge$ diameter or $T=|V|$).

**How a "no" is shown.** Colour refinement of the matching kind — multiset (1-WL) for sum/generic, *set*
for max, *distribution* for mean — run on both graphs jointly ($T$ rounds for fixed depth, to stability
otherwise) gives the same READOUT summary (multiset / set / distribution of colours), so no GNN of that
kind can separate them. Numerically, {num_draws} randomly initialised GNNs of that kind ({T_probe} layers,
edge weights $w_e=1$ fed to every message) give identical outputs (relative gap ≤ {ex.SAME_TOL:g}) while the true
answers differ. Controls: on pairs that the refinement *does* separate (P4 vs S4; for max/mean with a marked
node, since with equal features those two kinds see nothing), the same networks differ in ≥ 90% of the
draws — all controls worked: **{controls_ok}**.

**(a) Number of nodes, equal features.** Generic: READOUT $f(\\sum_v g(h_v))$ with $g\\equiv1$, $f=\\mathrm{{id}}$
returns $|V|$ (0 layers; exact on {num_graphs} random graphs: **{count_ok}**). A `multiset` READOUT can do the same
after max or mean layers. With max or mean *pooling*, no: equal features stay equal at every node (the max or
mean of equal values is that value), so every graph without isolated nodes gives one output — K3 vs C4.

**(b) $\\max_u d(u,v)$, $v$ marked by feature 0.** Hand-built network, state $(r_u, c_u)$, $r^0 = 1-h$, $c^0=0$:

$$m_u = \\mathrm{{AGG}}\\{{r_w: w\\in\\mathcal N(u)\\}},\\qquad r_u \\leftarrow [\\,r_u + m_u > 0\\,],\\qquad c_u \\leftarrow c_u + 1 - r_u^{{\\text{{old}}}} .$$

Sum, max and mean are all positive exactly when some neighbour is reached, so after $T\\ge\\max_u d(u,v)$ layers
$c_u=d(u,v)$, and READOUT $\\max_u c_u$ answers. For `same` pooling with generic/mean, $T$ further layers flood the
integer maximum using the Q15(b) log-sum-exp with $p > 2\\log\\Delta$ (error $<1/2$, then rounding), after which every node
holds the answer and the exact mean pooling returns it. Checked against networkx BFS on {num_graphs} random connected graphs
with $T=|V|_{{\\max}}={n_max}$:

{md_table(["aggregate", "readout", "layers", "exact", "of", "all exact"], ecc_rows)}

With a fixed $T$ the network only sees $T$ hops (with $T=2$ the max-GNN returns $\\min(d,2)$ exactly: **{truncated_ok}**), and
no fixed-depth GNN works: the spiders with arms $({L},{L},{L + 2})$ and $({L},{L + 1},{L + 1})$, marked at the end of the
first arm, have the same node count and the same depth-{T_fixed} neighbourhoods, but eccentricities
{ex.eccentricity_of_marked(pairs['b_fixed'].G1)} and {ex.eccentricity_of_marked(pairs['b_fixed'].G2)} (the pair is built for any $T$ with $L=2T+2$).

**(c) Number of triangles, equal features.** No, under every convention: C6 vs two triangles and $K_{{3,3}}$ vs
the triangular prism are regular graphs of equal size and degree, so refinement never splits a colour (at any depth);
they have 0 vs 2 triangles.

![Q16 pairs]({fig_path})

**Answers decided from this run's evidence** (a "yes" needs a construction that matched everywhere, a "no"
a counterexample that held; (d) is the mean rows):

{md_table(["aggregate", "readout", "layers", "(a) node count", "(b) max d(u,v)", "(c) triangles"], grid_rows)}

Evidence per pair (relative output gap over {num_draws} weight draws):

{md_table(["pair", "aggregate", "readout", "true answers", "refinement identical", "max gap", "median gap", "verdict"], probe_rows)}
"""
    ctx.add_section("Q16", "Power of MP-GNNs", body)

    # ---- Q17 chirality
    chir = ex.chirality_probe(ex.CHIRAL_MOLECULES, num_draws=32 if ctx.quick else 128, num_layers=T_probe, seed=ctx.seed)
    rows = [[e.name, f"`{e.smiles[0]}`", f"{e.cip[0]} / {e.cip[1]}", str(e.mirror_identical["none"]),
             str(e.mirror_separate["cip"]), str(e.rewrite_identical["cip"]), e.num_writings, str(e.tag_flips),
             str(e.cip_stable), str(e.rewrite_identical["tag"])] for e in chir]
    no_stereo_blind = all(e.mirror_identical["none"] for e in chir)
    cip_works = all(e.mirror_separate["cip"] and e.rewrite_identical["cip"] and e.cip_stable for e in chir)
    tag_order_dependent = any(e.tag_flips and not e.rewrite_identical["tag"] for e in chir)
    ctx.save_json("chirality", chir)
    body17 = f"""
**No.** A molecule and its mirror image have the same atoms, the same bonds and the same bond orders:
as graphs with node/edge features they are *isomorphic* (the SMILES differ only in `@`↔`@@`). An MP-GNN
— with generic aggregation or any other — is a function of the featured graph up to isomorphism, so it
must give both the same output. Shown on real enantiomers (graphs from `jaxhw.molecules`, stereo columns
blanked): random generic-aggregation GNNs ({T_probe} layers, bond features on the messages) give identical
outputs for every pair: **{no_stereo_blind}**.

**What would help:** a node feature that encodes the handedness *as a property of the molecule*. The
CIP label (R/S, from RDKit's CIP labeler; `jaxhw.molecules` encodes it) is one: it is a function of the 3D
arrangement and the CIP priorities, not of how the SMILES is written. RDKit's raw `CHI_TETRAHEDRAL_CW/CCW`
tag is not — it describes the neighbour order of this particular atom numbering, so writing the same molecule
from another root atom flips it. With the CIP feature the random GNNs separate every pair and give the
same output for every writing of a molecule: **{cip_works}**; with the raw tag, the output of some
molecule changes with the writing: **{tag_order_dependent}**.

{md_table(["molecule", "SMILES (one form)", "CIP", "same output w/o stereo", "CIP separates", "CIP: same for all writings", "writings", "raw tag flips", "CIP stable", "tag: same for all writings"], rows)}
"""
    ctx.add_section("Q17", "Chirality", body17)
