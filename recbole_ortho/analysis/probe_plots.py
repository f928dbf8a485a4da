r"""
recbole_ortho.analysis.probe_plots
##################################

The figures of :mod:`recbole_ortho.probe`, drawn from its JSON payload alone (so a saved
``probe.json`` can be re-plotted): one panel per GCA module and direction (rows: the modules,
``gca{p} A←B`` = domain A's states attend to domain B's at stage ``p``). Matplotlib with the Agg
backend; each PNG is written through a temporary file.

- ``cosines.png``: distributions of :math:`\cos(X, X')`, :math:`\cos(X, Y)` and
  :math:`\cos(X, G \odot X')` over the query steps;
- ``decomposition.png``: the shares of the squared norm of :math:`X'` and of the gated update
  along :math:`X` and orthogonal to it, and their size relative to :math:`X`;
- ``gate.png``: the gate per dimension (its distribution and mean) and over all dimensions (vector
  gate), or the learnt :math:`\alpha` (scalar gate); no gate figure for ``gca_gate: none``;
- ``by_position.png``: the statistics against the query's position in the sequence and against
  the number of steps before the target;
- ``by_history.png``: per-user statistics against the number of domain-A and of domain-B items in
  the user's evaluated history.

Reference:
    Hyunin Lee et al. "Cross-attention Secretly Performs Orthogonal Alignment in Recommendation
    Models." arXiv:2510.09435, 2025.
"""

import math
import os

import numpy as np

#: colour of each plotted statistic (the same in every figure)
COLOURS = {'abs_cos_x_xatt': 'tab:blue', 'abs_cos_x_y': 'tab:orange', 'abs_cos_x_update': 'tab:green',
           'parallel_share_update': 'tab:red', 'gate_mean': 'tab:purple'}
LABELS = {'abs_cos_x_xatt': "mean |cos(X, X')|", 'abs_cos_x_y': 'mean |cos(X, Y)|',
          'abs_cos_x_update': "mean |cos(X, G\u2299X')|",
          'parallel_share_update': "share of |G\u2299X'|\u00b2 along X", 'gate_mean': 'mean gate G'}
#: fewest query steps (users) a position (history length) needs to be drawn
MIN_COUNT = 10


def _plt():
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path):
    plt = _plt()
    tmp = path + '.tmp'
    fig.savefig(tmp, format='png', dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def _modules(payload):
    return [(k, m) for k, m in payload['modules'].items() if m.get('n_query_steps')]


def _title(payload):
    return f"{payload['model']} on {payload['dataset']} ({payload['split']} split, {payload['n_users']} users)"


def _num(v, spec='.3f'):
    return 'n/a' if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def _grid(plt, mods, width, height, **kw):
    """Axes for the modules: one row per stage, one column per direction (A\u2190B, B\u2190A)."""
    stages = sorted({m['stage'] for _, m in mods})
    fig, axes = plt.subplots(len(stages), 2, figsize=(2 * width, height * len(stages)), squeeze=False,
                             layout='constrained', **kw)
    where = {(m['stage'], m['direction']): axes[stages.index(m['stage']), 'ab'.index(m['direction'])]
             for _, m in mods}
    for ax in axes.reshape(-1):
        if ax not in where.values():
            ax.set_visible(False)
    return fig, [(where[(m['stage'], m['direction'])], k, m) for k, m in mods]


def plot_cosines(payload, path):
    plt = _plt()
    mods = _modules(payload)
    fig, panels = _grid(plt, mods, 6.2, 3.3)
    series = (('cos_x_xatt', "cos(X, X'), X' = cross-attention output CA(X, Y)", 'tab:blue', '-', 2.0),
              ('cos_x_y', "cos(X, Y), Y = the other domain's state at the step (gate input)", 'tab:orange', '-', 1.4),
              ('cos_x_update', "cos(X, G\u2299X'), the gated update", 'tab:green', '--', 1.4))
    for ax, key, m in panels:
        for name, label, colour, style, width in series:
            dist = m[name]
            if not dist.get('n'):
                continue
            edges = np.asarray(dist['hist']['edges'])
            share = 100.0 * np.asarray(dist['hist']['counts']) / dist['n']
            ax.stairs(share, edges, color=colour, linewidth=width, linestyle=style, label=label)
        ax.axvline(0.0, color='0.6', linewidth=0.8, linestyle=':')
        o = f"ortho_cos_{m['direction']}@gca{m['stage']}"
        st = m['statistics']['all']
        ax.set_title(f"{m['label']}: {m['description']}", fontsize=10)
        c = f"cross_cos_{m['direction']}@gca{m['stage']}"
        ax.text(0.01, 0.97, f"paper |mean cos(X,X')| = {_num(st.get(o + '/paper'), '.4f')}\n"
                            f"median |cos(X,X')| = {_num(st.get(o + '/median_abs'))}\n"
                            f"user mean |cos(X,Y)| = {_num(st.get(c))}\n"
                            f"{st.get(o + '/n_steps', 0)} query steps with a key, "
                            f"{st.get(o + '/no_key_steps', 0)} without",
                transform=ax.transAxes, va='top', fontsize=7.5,
                bbox=dict(boxstyle='round', facecolor='white', edgecolor='0.8', alpha=0.9))
        ax.set_xlim(-1, 1)
        ax.set_xlabel('cosine similarity with the query X')
        ax.set_ylabel('query steps (%)')
    handles, labels = panels[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc='outside lower center', ncols=3, fontsize=8, frameon=False)
    fig.suptitle('Distributions of cosines with the query X over the query steps\n' + _title(payload), fontsize=10)
    return _save(fig, path)


def plot_decomposition(payload, path):
    plt = _plt()
    mods = _modules(payload)
    labels, par, orth, ratio = [], [], [], []
    for _, m in mods:
        for part, name in (('cross_attention', "X'"), ('gated_update', "G\u2299X'")):
            dec = m['decomposition'][part]
            labels.append(f"{m['label']}\n{name}")
            par.append(100.0 * (dec.get('parallel_energy_share') or 0.0))
            orth.append(100.0 * (dec.get('orthogonal_energy_share') or 0.0))
            ratio.append(dec.get('norm_ratio_to_x_median') or 0.0)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 0.75 * len(labels) + 1.8), layout='constrained',
                                   gridspec_kw={'width_ratios': [3, 2]})
    y = np.arange(len(labels))[::-1]
    ax1.barh(y, par, color='tab:red', label='along X (parallel)')
    ax1.barh(y, orth, left=par, color='tab:blue', alpha=0.75, label='orthogonal to X')
    for yi, p in zip(y, par):
        ax1.text(min(p, 60) + 1.0, yi, f'{p:.1f}% along X, {100 - p:.1f}% orthogonal', va='center', fontsize=8,
                 color='white' if p > 20 else 'black')
    ax1.set_yticks(y, labels, fontsize=8)
    ax1.set_xlim(0, 100)
    ax1.set_xlabel('share of the squared norm, pooled over query steps (%)')
    ax1.set_title("Decomposition along X and orthogonal to X", fontsize=10)
    fig.legend(*ax1.get_legend_handles_labels(), loc='outside lower left', ncols=2, fontsize=8, frameon=False)
    ax2.barh(y, ratio, color=['tab:blue' if i % 2 == 0 else 'tab:green' for i in range(len(labels))])
    for yi, r in zip(y, ratio):
        ax2.text(r, yi, f' {r:.3f}', va='center', fontsize=8)
    ax2.set_yticks(y, [])
    ax2.set_xlim(0, max(ratio + [1e-9]) * 1.3)
    ax2.set_xlabel('median norm ratio |v| / |X|  (v = X\' or G\u2299X\')')
    ax2.set_title('Size relative to the query X', fontsize=10)
    fig.suptitle("X' = CA(X, Y) and the gated update G\u2299X' split along the query X and orthogonal to it\n"
                 + _title(payload), fontsize=10)
    return _save(fig, path)


def plot_gate(payload, path):
    plt = _plt()
    mods = _modules(payload)
    vector = [(k, m) for k, m in mods if m['gate'].get('kind') == 'vector' and m['gate'].get('n_steps')]
    scalar = [(k, m) for k, m in mods if m['gate'].get('kind') == 'scalar']
    if vector:
        fig, axes = plt.subplots(len(vector), 2, figsize=(11, 3.1 * len(vector)), squeeze=False,
                                 layout='constrained', gridspec_kw={'width_ratios': [3, 1.3]})
        for (ax1, ax2), (key, m) in zip(axes, vector):
            g = m['gate']
            mean = np.asarray(g['per_dim_mean'])
            q = {k: np.asarray(v) for k, v in g['per_dim_quantiles'].items()}
            order = np.argsort(mean)
            x = np.arange(len(mean))
            ax1.fill_between(x, q['q05'][order], q['q95'][order], color='tab:purple', alpha=0.18, linewidth=0,
                             label='5% to 95% of the query steps')
            ax1.fill_between(x, q['q25'][order], q['q75'][order], color='tab:purple', alpha=0.38, linewidth=0,
                             label='25% to 75%')
            ax1.plot(x, mean[order], color='tab:purple', linewidth=1.5, label='mean')
            full = (0.0, 1.0) if g['activation'] == 'sigmoid' else (-1.0, 1.0)
            lo, hi = float(q['q05'].min()), float(q['q95'].max())
            zoom = hi - lo < 0.25 * (full[1] - full[0])
            if zoom:                                  # a narrow band: show it, and say that the axis is zoomed
                pad = max(0.15 * (hi - lo), 1e-4)
                ax1.set_ylim(lo - pad, hi + pad)
            else:
                ax1.set_ylim(*full)
            ax1.set_xlim(-0.5, len(mean) - 0.5)
            ax1.set_xlabel(f"gate dimension, sorted by its mean ({g['d']} dimensions)")
            ax1.set_ylabel(f"gate value ({g['activation']})" + ('\naxis zoomed to the data' if zoom else ''))
            ax1.set_title(f"{m['label']}: the gate per dimension over {g['n_steps']} query steps with a key",
                          fontsize=10)
            ax1.legend(fontsize=7, loc='upper left')
            h = g['hist_zoom'] if zoom else g['hist']
            counts = np.asarray(h['counts'], dtype=float)
            ax2.stairs(100.0 * counts / max(counts.sum(), 1), np.asarray(h['edges']), fill=True,
                       color='tab:purple', alpha=0.6)
            ax2.axvline(g['mean'], color='black', linewidth=1, linestyle='--', label=f"mean {g['mean']:.4f}")
            ax2.set_xlabel('gate value' + (' (zoomed)' if zoom else ''))
            ax2.set_ylabel('gate values (%)')
            ax2.legend(fontsize=7, loc='upper right')
            ax2.set_title(f"all dimensions: sd {g['std']:.3g}\nmin {g['min']:.4g}, max {g['max']:.4g}", fontsize=9)
        sampled = max(m['gate']['n_sampled_steps'] < m['gate']['n_steps'] for _, m in vector)
        fig.suptitle('Gate G of GCA = LN(X + G\u2299X\')\n' + _title(payload) +
                     ('\n(quantiles and zoomed histogram from a uniform sample of '
                      f"{max(m['gate']['n_sampled_steps'] for _, m in vector)} query steps)" if sampled else ''),
                     fontsize=10)
        return _save(fig, path)
    if scalar:
        fig, ax = plt.subplots(figsize=(6, 0.6 * len(scalar) + 1.6), layout='constrained')
        alphas = [m['gate'].get('alpha') or 0.0 for _, m in scalar]
        y = np.arange(len(scalar))[::-1]
        ax.barh(y, alphas, color='tab:purple')
        for yi, a in zip(y, alphas):
            ax.text(a, yi, f' {a:.4g}', va='center', fontsize=8)
        ax.set_yticks(y, [m['label'] for _, m in scalar])
        ax.axvline(0, color='0.5', linewidth=0.8)
        ax.set_xlabel("learnt scalar gate \u03b1 of GCA = LN(X + \u03b1 X')")
        fig.suptitle(_title(payload), fontsize=10)
        return _save(fig, path)
    return None


def _profile(ax, block, columns, xlabel, count_label, min_count):
    x = np.asarray(block['value'])
    n = np.asarray(block['n'])
    twin = ax.twinx()
    twin.bar(x, n, color='0.88', width=0.9, zorder=0)
    twin.set_ylabel(count_label, color='0.45', fontsize=8)
    twin.tick_params(axis='y', colors='0.45', labelsize=7)
    ax.set_zorder(twin.get_zorder() + 1)
    ax.patch.set_visible(False)
    low = 1.0
    for c in columns:
        if c not in block:
            continue
        v = np.array([np.nan if a is None else a for a in block[c]], dtype=float)
        ok = (np.asarray(block[f'n_{c}']) >= min_count) & ~np.isnan(v) & (v > 0)     # log axis: positive values
        if ok.any():
            ax.plot(x[ok], v[ok], marker='o', markersize=2.5, linewidth=1.3, color=COLOURS[c], label=LABELS[c])
            low = min(low, float(v[ok].min()))
    ax.set_xlabel(xlabel)
    ax.set_yscale('log')
    ax.set_ylim(10 ** (math.floor(math.log10(low * 0.9))), 1.0)


def _profiles(payload, path, which, panels, count_label, title, min_count):
    plt = _plt()
    mods = _modules(payload)
    fig, axes = plt.subplots(len(mods), len(panels), figsize=(5.2 * len(panels), 2.9 * len(mods)), squeeze=False,
                             layout='constrained')
    handles = {}
    for row, (key, m) in zip(axes, mods):
        cols = ['abs_cos_x_xatt', 'abs_cos_x_y', 'parallel_share_update']
        if m['gate'].get('kind') == 'vector':
            cols.append('gate_mean')
        for ax, (sub, xlabel) in zip(row, panels):
            _profile(ax, m[which][sub], cols, xlabel, count_label, min_count)
            ax.set_title(m['label'], fontsize=10)
            ax.set_ylabel('statistic (log scale)')
            for h, lab in zip(*ax.get_legend_handles_labels()):
                handles.setdefault(lab, h)
    if handles:
        fig.legend(list(handles.values()), list(handles), loc='outside lower center', ncols=len(handles), fontsize=8,
                   frameon=False)
    fig.suptitle(f'{title}\n{_title(payload)}\n(points with at least {min_count} '
                 f'{"query steps" if which == "by_position" else "users"}; grey bars: {count_label})', fontsize=9)
    return _save(fig, path)


def plot_by_position(payload, path, min_count=MIN_COUNT):
    return _profiles(payload, path, 'by_position',
                     [('position', 'position of the query step (0 = oldest item of the window)'),
                      ('before_target', 'steps between the query step and the target (0 = last item)')],
                     'query steps', 'Statistics by position.', min_count)


def plot_by_history(payload, path, min_count=MIN_COUNT):
    return _profiles(payload, path, 'by_history_length',
                     [('n_a', "domain-A items in the user's history"), ('n_b', "domain-B items in the user's history")],
                     'users', 'Per-user means by history length.', min_count)


#: the figures the probe may write (a rerun into the same folder removes those it does not redraw)
FIGURES = ('cosines.png', 'decomposition.png', 'gate.png', 'by_position.png', 'by_history.png')


def plot_probe(payload, out_dir, min_count=MIN_COUNT):
    """Write the probe's PNGs into ``out_dir``; returns their paths."""
    os.makedirs(out_dir, exist_ok=True)
    for name in FIGURES:                          # no stale figure of an earlier probe stays beside the new ones
        if os.path.isfile(os.path.join(out_dir, name)):
            os.remove(os.path.join(out_dir, name))
    if not _modules(payload):
        return []
    made = [plot_cosines(payload, os.path.join(out_dir, 'cosines.png')),
            plot_decomposition(payload, os.path.join(out_dir, 'decomposition.png')),
            plot_gate(payload, os.path.join(out_dir, 'gate.png')),
            plot_by_position(payload, os.path.join(out_dir, 'by_position.png'), min_count),
            plot_by_history(payload, os.path.join(out_dir, 'by_history.png'), min_count)]
    return [p for p in made if p]
