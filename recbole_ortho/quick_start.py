"""
recbole_ortho.quick_start
#########################

``run_recbole_ortho``: one run end to end (config -> data -> model -> train -> per-domain
valid/test metrics -> result JSON), as RecBole's ``run_recbole``.
"""

import json
import math
import os
from logging import getLogger
from time import perf_counter

import numpy as np
from recbole.utils import init_logger, init_seed, set_color

from recbole_ortho.config import Config, ConfigError
from recbole_ortho.data import create_dataset, data_preparation
from recbole_ortho.data.features import attach_features
from recbole_ortho.trainer import CDSRTrainer, results_table
from recbole_ortho.trainer.trainer import check_resume_settings, read_resume_checkpoint
from recbole_ortho.utils.param_match import count_parameters, match_parameters
from recbole_ortho.utils.paths import ranks_path
from recbole_ortho.utils.provenance import provenance
from recbole_ortho.model.registry import get_model
from recbole_ortho.utils.utils import set_threads


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)


def write_json_atomic(path, payload):
    """Write ``payload`` as JSON to ``path`` through a temporary file (no half-written file)."""
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    tmp = os.path.join(d, f'.{os.path.basename(path)}.tmp')
    with open(tmp, 'w') as f:
        json.dump(_jsonable(payload), f, indent=2)
    os.replace(tmp, path)


def write_ranks_atomic(path, splits):
    """Write ``{split: {'user', 'domain', 'rank', 'ties', 'n_neg'}}`` as one compressed npz with the
    arrays ``<split>_<name>`` (user tokens as unicode, the rest as small integers), through a
    temporary file."""
    arrays = {}
    for split, r in splits.items():
        for k, v in r.items():
            v = np.asarray(v)
            if k == 'user':
                v = v.astype(str)
            elif k == 'domain':
                v = v.astype(np.int8)
            else:
                v = v.astype(np.int32)
            arrays[f'{split}_{k}'] = v
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    tmp = os.path.join(d, f'.{os.path.basename(path)}.tmp')
    with open(tmp, 'wb') as f:
        np.savez_compressed(f, **arrays)
    os.replace(tmp, path)


def build_model(config, data):
    """Instantiate ``config['model']``; with ``param_match`` set, first widen it to the named
    model's parameter count (:func:`~recbole_ortho.utils.param_match.match_parameters` on the
    model's ``param_match_key``; the config is updated). Returns ``(model, info)`` where ``info``
    holds the parameter counts."""
    model_class = get_model(config['model'])
    attach_features(data, model_class, config)          # the features it declares, computed once per dataset
    info = {}
    target = config['param_match']
    if target:
        target_class = get_model(target)
        target_config = Config(model=target, dataset=config['dataset'],
                               config_dict=_external(config, drop=('model', 'param_match')))
        init_seed(config['seed'], config['reproducibility'])
        n_target = count_parameters(target_class(target_config, data))
        updates, _ = match_parameters(model_class, config, data, n_target)
        for k, v in updates.items():
            config[k] = v
        info['param_match'] = {'target_model': target, 'target_n_params': n_target, 'updates': updates}
    init_seed(config['seed'], config['reproducibility'])
    model = model_class(config, data).to(config['device'])
    info['n_params'] = count_parameters(model)
    if target:
        n_t = info['param_match']['target_n_params']
        info['param_match']['rel_diff'] = (info['n_params'] - n_t) / n_t
    return model, info


#: the settings an ``also_evaluate`` entry may change: evaluation only (the weights and the data stay)
ALSO_EVALUATE_KEYS = ('eval_protocol', 'eval_neg_num', 'eval_neg_exclude', 'eval_seed', 'eval_ties', 'metrics')


def check_also_evaluate(config):
    """The ``also_evaluate`` entries, checked (before any training): a ``{name: {setting: value}}``
    mapping whose settings are among :data:`ALSO_EVALUATE_KEYS`; a :class:`ConfigError` names the
    entry and the key otherwise."""
    entries = config['also_evaluate'] or {}
    if not isinstance(entries, dict):
        raise ConfigError(f'also_evaluate: expected {{name: {{setting: value}}}}, got {entries!r}')
    for name, overrides in entries.items():
        if not isinstance(overrides, dict) or not overrides:
            raise ConfigError(f'also_evaluate.{name}: expected a non-empty {{setting: value}} mapping, got {overrides!r}')
        bad = sorted(set(overrides) - set(ALSO_EVALUATE_KEYS))
        if bad:
            raise ConfigError(f'also_evaluate.{name}: {", ".join(bad)} cannot change in a second evaluation of the same '
                              f'weights (allowed: {", ".join(ALSO_EVALUATE_KEYS)})')
    return entries


def also_evaluate(config, data, model, train_format, precision='fp32'):
    """Evaluate ``model`` (the best weights) again under each entry of ``also_evaluate`` (``{name:
    {setting: value}}``, settings among :data:`ALSO_EVALUATE_KEYS`): the dataset is built (or read
    from the cache) under those settings, checked to hold the same users and items, and evaluated
    on its validation and test data. Returns ``{name: {'settings', 'valid', 'test'}}`` ({} when
    none is configured). Raises :class:`ConfigError` naming an entry's unknown key."""
    from recbole_ortho.evaluator import CDSREvaluator
    out = {}
    for name, overrides in check_also_evaluate(config).items():
        cfg = Config(model=config['model'], dataset=config['dataset'],
                     config_dict=dict(_external(config, drop=('also_evaluate', 'resume', 'param_match')), **overrides))
        other = create_dataset(cfg)
        if not (np.array_equal(other.user_tokens, data.user_tokens) and np.array_equal(other.item_tokens, data.item_tokens)):
            raise ConfigError(f'also_evaluate.{name}: the data under these settings has other users or items')
        _, valid_data, test_data = data_preparation(cfg, other, train_format=train_format)
        evaluator = CDSREvaluator(cfg, other, precision=precision)
        out[name] = {'settings': dict(overrides),
                     'valid': evaluator.evaluate(model, valid_data, desc=f'Valid ({name})'),
                     'test': evaluator.evaluate(model, test_data, desc=f'Test ({name})')}
        getLogger().info(set_color(f'test result ({name}: {overrides})', 'yellow') + '\n'
                         + results_table(out[name]['test'], cfg['metrics'], config['metric_decimal_place']))
    return out


def _external(config, drop=()):
    d = dict(config.external_config_dict)
    for k in ('source_domain', 'target_domain'):
        if not d.get(k):
            d.pop(k, None)
    for k in drop:
        d.pop(k, None)
    return d


def run_recbole_ortho(model=None, dataset=None, config_file_list=None, config_dict=None, saved=True,
                      keep_checkpoints=True):
    """Train and evaluate one model on one dataset; returns the result dictionary
    (``valid``/``test`` per domain, ``n_params``, ``trace``, ``config``).

    With ``resume`` (a last-epoch checkpoint, ``<Model>-<dataset>-<stamp>-last.pth``) the run
    continues that checkpoint's run (same settings but ``epochs`` and operational keys, same data;
    see :func:`~recbole_ortho.trainer.trainer.check_resume_settings`) instead of starting over.
    ``keep_checkpoints=False`` deletes the run's checkpoints once its result is written (the
    sweeps' trials: their run store keeps no weights)."""
    t_start = perf_counter()
    config = Config(model=model, dataset=dataset, config_file_list=config_file_list, config_dict=config_dict)
    if config['save_ranks'] and not config['result_file']:
        raise ConfigError('save_ranks: True writes the ranks beside result_file; set --result_file=PATH.json')
    check_also_evaluate(config)
    ckpt = read_resume_checkpoint(config['resume'], config) if config['resume'] else None
    init_seed(config['seed'], config['reproducibility'])
    init_logger(config)
    logger = getLogger()
    set_threads(config['threads'])
    logger.info(config)

    t0 = perf_counter()
    data = create_dataset(config)
    logger.info(data)
    model_class = get_model(config['model'])
    train_format = getattr(model_class, 'train_format', 'prefix')
    train_data, valid_data, test_data = data_preparation(config, data, train_format=train_format)
    attach_features(data, model_class, config)          # what the model declares, in the data time
    t_data = perf_counter() - t0
    logger.info(set_color('Data ready', 'green') + f' in {t_data:.2f}s: {len(train_data)} training batches '
                f'({train_format} rows), {valid_data.n} evaluated users')

    model, info = build_model(config, data)
    logger.info(model)
    if 'param_match' in info:
        pm = info['param_match']
        logger.info(set_color('Parameter match', 'yellow') + f": {config['model']} widened by {pm['updates']} -> "
                    f"{info['n_params']} parameters vs {pm['target_model']} {pm['target_n_params']} "
                    f"({100 * pm['rel_diff']:+.2f} %)")
    logger.info(set_color('Trainable parameters', 'blue') + f": {info['n_params']}")

    if ckpt is not None:                       # after build_model: param_match has updated the config alike
        check_resume_settings(ckpt, config, config['resume'])
    trainer = CDSRTrainer(config, model, data)
    if ckpt is not None:
        trainer.restore(ckpt, config['resume'], train_data, valid_data)
        del ckpt
    best_score, _ = trainer.fit(train_data, valid_data, saved=saved)
    valid_result = trainer.evaluate(valid_data, load_best_model=True, desc='Valid (best)')
    ranks = {'valid': trainer.evaluator.last_ranks}
    test_result = trainer.evaluate(test_data, load_best_model=False, desc='Test')
    ranks['test'] = trainer.evaluator.last_ranks
    also = also_evaluate(config, data, model, train_format, trainer.precision)   # the same weights, other protocols
    digits = config['metric_decimal_place']
    logger.info(set_color('best valid ', 'yellow') + '\n' + results_table(valid_result, config['metrics'], digits))
    logger.info(set_color('test result', 'yellow') + '\n' + results_table(test_result, config['metrics'], digits))

    t_process = perf_counter() - t_start
    result = {
        'model': config['model'], 'dataset': config['dataset'],
        'valid': valid_result, 'test': test_result, 'n_params': info['n_params'],
        'best_epoch': trainer.best_epoch, 'epochs_run': len(trainer.trace),
        'stopped_by_time_budget': trainer.stopped_by_budget, 'stop_reason': trainer.stop_reason,
        'best_valid_score': best_score,
        # the whole run: a resumed run adds the fitting time of the processes before it (its last checkpoint's)
        'trace': trainer.trace, 'data_time_s': t_data,
        'wall_time_s': t_process + trainer.fit_time_before_s, 'wall_time_process_s': t_process,
        'checkpoint': trainer.saved_model_file if (saved and config['save_model'] and keep_checkpoints) else None,
        'config': {k: config.final_config_dict[k] for k in sorted(config.final_config_dict)},
        'precision': trainer.precision,          # what ran (precision: bf16 falls back to fp32 without bf16 hardware)
        'provenance': provenance(device=config['device'], precision=trainer.precision),
    }
    if 'param_match' in info:
        result['param_match'] = info['param_match']
    if also:
        result['also'] = also
    if trainer.resumed_from is not None:
        result['resumed_from'] = trainer.resumed_from
    if getattr(data, 'overlap_stats', None) is not None:       # overlapped / A-only / B-only users (overlap_ratio)
        result['data'] = data.overlap_stats
    if config['save_ranks']:                     # before result.json: its presence means "finished"
        write_ranks_atomic(ranks_path(config['result_file']), ranks)
        result['ranks_file'] = os.path.basename(ranks_path(config['result_file']))
    if config['result_file']:
        write_json_atomic(config['result_file'], result)
        logger.info(set_color('Result written to', 'green') + f" {config['result_file']}")
    if not keep_checkpoints:                     # after the result: a kill before it still resumes
        for path in (trainer.saved_model_file, trainer.last_model_file):
            if os.path.isfile(path):
                os.remove(path)
    for h in list(logger.handlers):   # release the log file (RecBole's init_logger adds handlers per run)
        h.flush()
    return result


# ---------------------------------------------------------------------------------------------
# Load a trained model (RecBole's ``load_data_and_model``)
from recbole_ortho.utils.errors import DataError  # noqa: E402


class CheckpointError(ValueError):
    """A file that is not a readable checkpoint of this package, or whose weights do not fit the
    model its config builds; the message names the file."""


class DataFingerprintError(DataError):
    """The data files now differ from those a checkpoint was trained on (its ``data_fingerprint``);
    the message names the checkpoint and the files."""


#: what a checkpoint written by :class:`~recbole_ortho.trainer.CDSRTrainer` holds at least
CHECKPOINT_KEYS = ('config', 'state_dict')


def read_checkpoint(model_file):
    """The checkpoint dictionary of ``model_file``, loaded on the CPU (a checkpoint written on a
    GPU loads on a machine without one). Raises ``FileNotFoundError`` (missing file) or
    :class:`CheckpointError` (unreadable, or not a checkpoint of this package), one line naming
    the file. Only for files this package wrote (see :func:`~recbole_ortho.utils.utils.load_checkpoint`)."""
    from recbole_ortho.utils.utils import load_checkpoint
    try:
        ckpt = load_checkpoint(model_file, map_location='cpu')
    except FileNotFoundError:
        raise
    except Exception as e:          # torch/pickle/zip errors of a truncated or foreign file
        first = str(e).strip().splitlines()[0] if str(e).strip() else ''
        raise CheckpointError(f'{model_file}: not a readable checkpoint ({type(e).__name__}'
                              f'{": " + first[:200] if first else ""})') from None
    missing = [k for k in CHECKPOINT_KEYS if not isinstance(ckpt, dict) or k not in ckpt]
    if missing:
        raise CheckpointError(f'{model_file}: not a checkpoint of recbole_ortho (no {" / ".join(missing)}; '
                              f'train with save_model: True to write one)')
    if not isinstance(ckpt['config'], Config):
        raise CheckpointError(f'{model_file}: not a checkpoint of recbole_ortho (its config is a '
                              f'{type(ckpt["config"]).__name__}, not a recbole_ortho Config)')
    return ckpt


def _fingerprint_changes(saved, now):
    """``'<file> is <size> bytes, sha1 <12 hex> (trained on <size> bytes, sha1 <12 hex>)'`` for each
    file whose entry differs (a file of another name: both entries)."""
    out = []
    for (n0, z0, h0), (n1, z1, h1) in zip(saved, now):
        if n0 != n1:
            out.append(f'{n1} ({z1} bytes, sha1 {h1[:12]}) is there instead of {n0} ({z0} bytes, sha1 {h0[:12]})')
        elif (z0, h0) != (z1, h1):
            out.append(f'{n1} is {z1} bytes, sha1 {h1[:12]} (trained on {z0} bytes, sha1 {h0[:12]})')
    return '; '.join(out)


def check_data_fingerprint(config, ckpt, model_file):
    """Raise :class:`DataFingerprintError` when ``files_signature(config)`` (the ``.inter`` files
    now on disk) differs from the checkpoint's ``data_fingerprint``. A checkpoint written before
    checkpoints recorded it cannot be checked: a warning says so."""
    from recbole_ortho.data.dataset import files_signature
    saved = ckpt.get('data_fingerprint')
    if saved is None:
        getLogger().warning(f'{model_file}: the checkpoint records no data fingerprint (written before '
                            f'checkpoints did); the data cannot be checked against the training data')
        return
    now = files_signature(config)
    norm = lambda s: [[str(n), int(z), str(h)] for n, z, h in s]    # noqa: E731
    if norm(now) != norm(saved):
        raise DataFingerprintError(
            f"{model_file}: the data fingerprint differs from the data it was trained on: dataset "
            f"[{config['dataset']}] in {os.path.abspath(config['dataset_dir'])}: "
            f"{_fingerprint_changes(norm(saved), norm(now))}; load it with that data, or retrain")


def load_data_and_model(model_file, device=None):
    """Load a checkpoint and rebuild everything around it, as RecBole's ``load_data_and_model``.

    The config is the one saved in the checkpoint (a parameter-matched model's widened sizes
    included). The dataset is rebuilt from the cache (``create_dataset``) after checking that the
    ``.inter`` files are those the model was trained on (:func:`check_data_fingerprint`); the
    model is built from the config and its weights loaded, in evaluation mode.

    Args:
        model_file (str): a checkpoint written by a run with ``save_model: True``.
        device (str or torch.device, optional): where the model runs; default: the GPU when the
            checkpoint was trained on one and one is available, else the CPU (a checkpoint
            trained on a GPU loads on a machine without one). ``config['device']`` is set to it.

    Returns:
        tuple: ``(config, model, dataset, train_data, valid_data, test_data)``.

    Raises:
        FileNotFoundError: ``model_file`` does not exist.
        CheckpointError: not a readable checkpoint of this package, or weights that do not fit.
        DataFingerprintError: the data files differ from the checkpoint's ``data_fingerprint``.
    """
    import torch
    from recbole_ortho.data.dataset import ensure_prepared

    ckpt = read_checkpoint(model_file)
    config = ckpt['config']
    if device is None:
        trained = config['device']
        on_gpu = getattr(trained, 'type', str(trained)).startswith('cuda')
        device = 'cuda' if on_gpu and torch.cuda.is_available() else 'cpu'
    device = torch.device(device)
    config['device'] = device
    if device.type == 'cpu':
        config['use_gpu'] = False
    init_seed(config['seed'], config['reproducibility'])
    ensure_prepared(config)
    check_data_fingerprint(config, ckpt, model_file)
    dataset = create_dataset(config)
    model_class = get_model(config['model'])
    train_format = getattr(model_class, 'train_format', 'prefix')
    train_data, valid_data, test_data = data_preparation(config, dataset, train_format=train_format)
    init_seed(config['seed'], config['reproducibility'])
    model = model_class(config, dataset)          # the saved config holds any param_match widening
    try:
        model.load_state_dict(ckpt['state_dict'])
    except RuntimeError as e:
        detail = ' '.join(str(e).split())[:300]
        raise CheckpointError(f'{model_file}: its weights do not fit the {config["model"]} built from its config '
                              f'on dataset [{config["dataset"]}] ({detail})') from None
    model = model.to(device)
    model.eval()
    return config, model, dataset, train_data, valid_data, test_data
