"""
recbole_ortho.sweep.spec
########################

A sweep spec (yaml) and its expansion into runs.

.. code-block:: yaml

    datasets: [food_kitchen]
    seeds: [2020, 2021, 2022]
    settings: {epochs: 8, warmup_epochs: 0, learning_rate: 0.001}   # every run
    models:
      ABXI: {}
      ABXI_GCA:
        grid: {gca_positions: [[0], [0, 1]], gca_activation: [sigmoid, tanh]}
        # or a RecBole .hyper file of `choice` lines:  grid_file: abxi_gca.hyper
        exclude: [{gca_positions: [0, 1], gca_activation: tanh}]   # grid points not to run (optional)
    param_matched: true      # + the base model widened to each distinct parameter count of the variants
    primary:                 # the declared (confirmatory) comparison; a list of such for several
      model: ABXI_GCA
      variant: {gca_positions: [0], gca_activation: sigmoid}   # a grid point (none: a model without grid)
      against: matched       # matched: the base widened to the variant's parameter count | base
      metric: ndcg@10        # (default)
      domains: [A, B]        # (default)

A run is (model, dataset, settings, seed); its id is a hash of those, of the resolved settings
(the model's, dataset's and overall property files merged with the run's settings), of the
dataset's content fingerprint and of the package version, so the same run gets the same id in
any process, and a change of code version, data or defaults gives a new one. ``primary`` (and
``name``) describe the analysis, not the runs: they enter no run id.

``exclude`` leaves grid points out, each named by one value of every grid key (a point the grid
does not have is an error): e.g. a point that another sweep runs already, with the same settings.

``primary`` declares the comparisons the sweep is for (:func:`check_primary`): the analysis
Holm-corrects those alone (one per dataset and domain for each entry) and calls every other
comparison exploratory (:mod:`recbole_ortho.analysis.report`).

An option added later with a default that turns it off would otherwise change every id (its key
enters the resolved settings) and orphan the finished runs of a sweep: the keys of
:data:`ID_NEUTRAL` are left out of the resolved settings while they hold their neutral value, so
a run that does not use such an option keeps its id, and one that sets it gets a new id.
"""

import ast
import hashlib
import itertools
import json
import os
from dataclasses import dataclass, field

import yaml

from recbole_ortho.utils.errors import ConfigError

SPEC_KEYS = ('datasets', 'seeds', 'settings', 'models', 'param_matched', 'name', 'primary')
#: the keys of a ``models`` entry
MODEL_KEYS = ('grid', 'grid_file', 'settings', 'exclude')
#: the keys of a ``primary`` entry
PRIMARY_KEYS = ('model', 'variant', 'against', 'metric', 'domains')
#: what a GCA variant is compared with: its base model, or the base widened to its parameter count
PRIMARY_AGAINST = ('matched', 'base')

#: Options added after runs were recorded, each with its neutral ("feature off") value, the default
#: of ``properties/overall.yaml``: a key holding that value is left out of the resolved settings a
#: run id hashes, so the ids of runs that do not use the option are those from before it existed.
#: A new off-by-default option joins this mapping together with its key in the property files.
ID_NEUTRAL = {
    'overlap_ratio': None,          # no overlap-ratio split: every user as prepared
    'eval_neg_exclude': 'history',  # the ABXI negatives: excluding every item of the user
    # The tie rule: runs recorded before it existed ranked ties in the target's favour; with a trained
    # item table (ABXI, CDSRNP: n_tied_targets 0) every rule gives the same numbers, so their ids stay.
    # LLM4CDSR's stores, whose untitled items tie, were rerun under 'average' (its other settings unchanged).
    'eval_ties': 'average',
    'save_ranks': False,            # writes a file beside the result, changes no number
    'resume': None,                 # a trial passes its own last checkpoint: the same run, continued
    'also_evaluate': None,          # further evaluations of the best weights (result['also'])
    'precision': 'fp32',            # the precision every run had before the setting existed
    'bf16_emulation': False,        # bf16 without bf16 hardware: off (bf16 falls back to fp32)
}
#: keys that never enter a run id, whatever their value: they change what a run writes, or where it
#: starts from (``resume``: the run continued is the same run), not its numbers
ID_IGNORED = ('save_ranks', 'resume')


def _is_neutral(key, value):
    neutral = ID_NEUTRAL[key]
    if neutral is None or isinstance(neutral, bool) or isinstance(value, bool):
        return value is neutral
    return type(value) is type(neutral) and value == neutral


@dataclass
class RunSpec:
    """One run of a sweep: ``model`` on ``dataset`` with ``settings`` (the grid point and the
    common settings; ``param_match`` for a matched base) and ``seed``; ``variant`` labels it for
    the analysis (``base``, the grid point, or ``param-matched to ...``)."""
    model: str
    dataset: str
    seed: int
    settings: dict
    variant: str
    run_id: str = ''
    resolved: dict = field(default_factory=dict)

    def config_dict(self):
        """The settings passed to ``run_recbole_ortho`` (without the sweep's paths)."""
        return dict(self.settings, seed=self.seed)

    def to_json(self):
        return {'run_id': self.run_id, 'model': self.model, 'dataset': self.dataset, 'seed': self.seed,
                'settings': self.settings, 'variant': self.variant}


def read_hyper_grid(path):
    """A RecBole ``.hyper`` file as a grid: each line ``name choice [v1, v2, ...]``. Other RecBole
    kinds (``loguniform``, ``uniform``, ``quniform``) describe distributions, not grids: they raise
    a :class:`ConfigError` naming the file and line."""
    grid = {}
    with open(path) as f:
        for no, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith('#'):
                continue
            parts = line.split(maxsplit=2)
            if len(parts) != 3:
                raise ConfigError(f'{path} line {no}: expected "name choice [v1, v2, ...]", got {line!r}')
            name, kind, values = parts
            if kind != 'choice':
                raise ConfigError(f'{path} line {no}: [{kind}] is a distribution; a sweep grid needs "choice"')
            try:
                grid[name] = list(ast.literal_eval(values))
            except (ValueError, SyntaxError):
                raise ConfigError(f'{path} line {no}: cannot read the values {values!r}') from None
    return grid


def load_spec(path):
    """Read and check a sweep spec (see the module docstring); errors name the file and key."""
    with open(path) as f:
        spec = yaml.safe_load(f) or {}
    where = os.path.basename(path)
    unknown = set(spec) - set(SPEC_KEYS)
    if unknown:
        raise ConfigError(f'{where}: unknown keys {sorted(unknown)}; known: {list(SPEC_KEYS)}')
    for key in ('datasets', 'seeds', 'models'):
        if not spec.get(key):
            raise ConfigError(f'{where}: {key} missing or empty')
    if not all(isinstance(s, int) and not isinstance(s, bool) for s in spec['seeds']):
        raise ConfigError(f'{where}: seeds must be integers, got {spec["seeds"]}')
    models = {}
    for model, m in spec['models'].items():
        m = dict(m or {})
        bad = set(m) - set(MODEL_KEYS)
        if bad:
            raise ConfigError(f'{where}: models.{model}: unknown keys {sorted(bad)} ({", ".join(MODEL_KEYS)})')
        grid = dict(m.get('grid') or {})
        if m.get('grid_file'):
            gf = m['grid_file'] if os.path.isabs(m['grid_file']) else os.path.join(os.path.dirname(path), m['grid_file'])
            grid.update(read_hyper_grid(gf))
        for k, v in grid.items():
            if not isinstance(v, list) or not v:
                raise ConfigError(f'{where}: models.{model}.grid.{k} must be a non-empty list')
        exclude = _check_exclude(m.get('exclude'), grid, f'{where}: models.{model}.exclude')
        models[model] = {'grid': grid, 'settings': dict(m.get('settings') or {}), 'exclude': exclude}
    spec['models'] = models
    spec['settings'] = dict(spec.get('settings') or {})
    spec['param_matched'] = bool(spec.get('param_matched', False))
    spec['name'] = spec.get('name') or os.path.splitext(where)[0]
    spec['primary'] = check_primary(spec, where) if spec.get('primary') is not None else []
    return spec


def _is_grid_point(point, grid):
    """Whether ``point`` names one value of every key of ``grid`` (and no other key)."""
    return isinstance(point, dict) and set(point) == set(grid) and all(point[k] in grid[k] for k in grid)


def _check_exclude(exclude, grid, where):
    """The ``exclude`` list of a model entry: grid points (``{key: value}``, one value of every
    grid key) to leave out; an error names the entry that is not one."""
    if exclude is None:
        return []
    if not isinstance(exclude, list):
        raise ConfigError(f'{where} must be a list of grid points, got {exclude!r}')
    if exclude and not grid:
        raise ConfigError(f'{where}: the model has no grid to exclude points from')
    for i, point in enumerate(exclude):
        if not _is_grid_point(point, grid):
            raise ConfigError(f'{where}[{i}]: {point!r} is not a grid point (one value of each of {grid})')
    return [dict(p) for p in exclude]


def check_primary(spec, where='spec'):
    """The ``primary`` key of a loaded spec as a list of entries ``{'model', 'variant' (the grid
    point, None for a model run without grid), 'label' (the variant's label in the analysis),
    'against' ('matched' | 'base'), 'metric', 'domains'}``. Raises a :class:`ConfigError` naming the
    file and the key (``primary.variant``, ``primary[1].against``, ...) when an entry does not name a
    ``_GCA`` model of the sweep and one of its grid points, a base the sweep runs (``matched`` needs
    ``param_matched: true``), a known metric (default ``ndcg@10``) or domains among A, B (default
    both)."""
    raw = spec.get('primary')
    entries = raw if isinstance(raw, list) else [raw]
    if not entries or not all(isinstance(e, dict) for e in entries):
        raise ConfigError(f'{where}: primary: expected a mapping (model, variant, against, metric, domains) '
                          f'or a list of them, got {raw!r}')
    out = []
    for i, e in enumerate(entries):
        key = 'primary' if not isinstance(raw, list) else f'primary[{i}]'
        bad = set(e) - set(PRIMARY_KEYS)
        if bad:
            raise ConfigError(f'{where}: {key}: unknown keys {sorted(bad)}; known: {list(PRIMARY_KEYS)}')
        model = e.get('model')
        if model not in spec['models']:
            raise ConfigError(f'{where}: {key}.model: [{model}] is not a model of this sweep ({list(spec["models"])})')
        from recbole_ortho.model.registry import get_model
        try:
            base = base_model_of(get_model(model))
        except (ValueError, TypeError) as err:
            raise ConfigError(f'{where}: {key}.model: [{model}]: {err}') from None
        if base is None:
            raise ConfigError(f'{where}: {key}.model: [{model}] is not a GCA variant (no base model to compare with)')
        grid = spec['models'][model]['grid']
        point = e.get('variant')
        if grid:
            if not _is_grid_point(point, grid):
                raise ConfigError(f'{where}: {key}.variant: {point!r} is not a grid point of {model} '
                                  f'(one value of each of {grid})')
            if point in spec['models'][model].get('exclude', []):
                raise ConfigError(f'{where}: {key}.variant: {point!r} is excluded (models.{model}.exclude): '
                                  f'the sweep does not run it')
            label = variant_label(point)
        elif point:
            raise ConfigError(f'{where}: {key}.variant: {model} has no grid in this sweep; leave variant out')
        else:
            point, label = None, 'default settings'
        against = e.get('against')
        if against not in PRIMARY_AGAINST:
            raise ConfigError(f'{where}: {key}.against: [{against}] must be one of {list(PRIMARY_AGAINST)}')
        if against == 'matched' and not spec['param_matched']:
            raise ConfigError(f'{where}: {key}.against: matched needs param_matched: true')
        if against == 'base' and base not in spec['models']:
            raise ConfigError(f'{where}: {key}.against: base needs the base model {base} among the models')
        from recbole_ortho.evaluator.metrics import parse_metric
        metric = str(e.get('metric') or 'ndcg@10').strip().lower()
        try:
            parse_metric(metric)
        except ConfigError as err:
            raise ConfigError(f'{where}: {key}.metric: {err}') from None
        domains = e.get('domains', ['A', 'B'])
        if not isinstance(domains, list) or not domains or not set(domains) <= {'A', 'B'} or len(set(domains)) != len(domains):
            raise ConfigError(f'{where}: {key}.domains: {domains!r} must be a non-empty list of A, B')
        entry = {'model': model, 'variant': point, 'label': label, 'against': against, 'metric': metric,
                 'domains': list(domains)}
        if any(all(o[k] == entry[k] for k in ('model', 'label', 'against', 'metric')) for o in out):
            raise ConfigError(f'{where}: {key}: the same comparison is declared twice')
        out.append(entry)
    return out


def grid_points(grid):
    """Every combination of a grid ``{key: [values]}``, keys in sorted order ([{}] for no grid)."""
    keys = sorted(grid)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))]


def variant_label(point):
    return ', '.join(f'{k}={json.dumps(v)}' for k, v in sorted(point.items())) or 'base'


def run_id(model, dataset, seed, resolved, fingerprint, version):
    """Deterministic id: ``<model>-<dataset>-s<seed>-<12 hex>`` from a hash of everything that
    defines the run."""
    payload = json.dumps({'model': model, 'dataset': dataset, 'seed': seed, 'settings': resolved,
                          'data': fingerprint, 'version': version}, sort_keys=True, default=str)
    return f'{model}-{dataset}-s{seed}-{hashlib.sha1(payload.encode()).hexdigest()[:12]}'


def base_model_of(model_class):
    """The base model a ``_GCA`` variant is matched against: its nearest parent class of the
    family with a property file of its own (ABXI_GCA -> ABXI); None for a base model."""
    from recbole_ortho.model.abstract_recommender import CrossDomainSeqRecommender
    from recbole_ortho.utils import properties_dir
    for cls in model_class.__mro__[1:]:
        if cls is CrossDomainSeqRecommender:
            break
        if not issubclass(cls, CrossDomainSeqRecommender):          # a mixin such as GCAVariant
            continue
        if os.path.isfile(os.path.join(properties_dir(), 'model', cls.__name__ + '.yaml')):
            return cls.__name__
    return None


def expand(spec, data_root=None):
    """The runs of a spec: datasets x models x grid points x seeds, plus with ``param_matched``,
    for each ``_GCA`` model and each distinct parameter count among its grid points, its base
    model widened to it (``param_match``, the grid point's settings passed on so the target is
    built alike). Needs the datasets prepared (it fingerprints them and counts parameters)."""
    import sys
    from recbole.utils import init_seed
    from recbole_ortho.config import Config
    from recbole_ortho.data import create_dataset, ensure_prepared, files_signature
    from recbole_ortho.model.registry import get_model
    from recbole_ortho.utils import count_parameters
    argv, sys.argv = sys.argv, sys.argv[:1]          # RecBole's Config reads sys.argv
    try:
        runs = []
        for dataset in spec['datasets']:
            common = dict(spec['settings'], **({'data_path': data_root} if data_root else {}))
            fingerprint = None
            for model, m in spec['models'].items():
                points = [p for p in grid_points(m['grid']) if p not in m.get('exclude', [])]
                base_cfg = Config(model=model, dataset=dataset, config_dict=dict(common, **m['settings']))
                if fingerprint is None:
                    ensure_prepared(base_cfg)
                    fingerprint = files_signature(base_cfg)
                for point in points:
                    settings = dict(spec['settings'], **m['settings'], **point)
                    runs += [_run(model, dataset, seed, settings, variant_label(point), base_cfg, fingerprint)
                             for seed in spec['seeds']]
                base = base_model_of(get_model(model)) if spec['param_matched'] else None
                if base is None:
                    continue
                data = create_dataset(base_cfg)
                counts = {}
                for point in points:
                    cfg = Config(model=model, dataset=dataset, config_dict=dict(common, **m['settings'], **point))
                    init_seed(cfg['seed'], cfg['reproducibility'])
                    counts.setdefault(count_parameters(get_model(model)(cfg, data)), point)
                base_cfg_b = Config(model=base, dataset=dataset, config_dict=dict(common))
                for n, point in sorted(counts.items()):
                    settings = dict(spec['settings'], **m['settings'], **point, param_match=model)
                    runs += [_run(base, dataset, seed, settings, f'param-matched to {model} ({n:,} parameters)',
                                  base_cfg_b, fingerprint) for seed in spec['seeds']]
        runs.sort(key=lambda r: spec['seeds'].index(r.seed))     # seed by seed: a partial sweep covers every setting
        ids = [r.run_id for r in runs]
        if len(set(ids)) != len(ids):
            dup = sorted({i for i in ids if ids.count(i) > 1})
            raise ConfigError(f'sweep: the spec describes the same run twice ({dup[:3]})')
        return runs
    finally:
        sys.argv = argv


def _run(model, dataset, seed, settings, variant, base_cfg, fingerprint):
    import recbole_ortho
    from recbole_ortho.config import model_property_files
    from recbole_ortho.model.registry import get_model
    from recbole_ortho.utils import properties_dir
    keys = set()
    for f in [os.path.join(properties_dir(), 'overall.yaml'), os.path.join(properties_dir(), 'dataset', dataset + '.yaml')] \
            + model_property_files(get_model(model)):
        if os.path.isfile(f):
            with open(f) as fh:
                keys |= set(yaml.safe_load(fh) or {})
    resolved = {k: base_cfg[k] for k in sorted(keys) if k in base_cfg and k not in ('data_path', 'cache_dir')}
    resolved.update(settings)
    resolved['seed'] = seed
    for k in ID_NEUTRAL:
        if k in resolved and (k in ID_IGNORED or _is_neutral(k, resolved[k])):
            del resolved[k]
    r = RunSpec(model=model, dataset=dataset, seed=seed, settings=settings, variant=variant, resolved=resolved)
    r.run_id = run_id(model, dataset, seed, resolved, fingerprint, recbole_ortho.__version__)
    return r
