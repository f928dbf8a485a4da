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
from recbole_ortho.trainer import CDSRTrainer, results_table
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


def _external(config, drop=()):
    d = dict(config.external_config_dict)
    for k in ('source_domain', 'target_domain'):
        if not d.get(k):
            d.pop(k, None)
    for k in drop:
        d.pop(k, None)
    return d


def run_recbole_ortho(model=None, dataset=None, config_file_list=None, config_dict=None, saved=True):
    """Train and evaluate one model on one dataset; returns the result dictionary
    (``valid``/``test`` per domain, ``n_params``, ``trace``, ``config``)."""
    t_start = perf_counter()
    config = Config(model=model, dataset=dataset, config_file_list=config_file_list, config_dict=config_dict)
    if config['save_ranks'] and not config['result_file']:
        raise ConfigError('save_ranks: True writes the ranks beside result_file; set --result_file=PATH.json')
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

    trainer = CDSRTrainer(config, model, data)
    best_score, _ = trainer.fit(train_data, valid_data, saved=saved)
    valid_result = trainer.evaluate(valid_data, load_best_model=True, desc='Valid (best)')
    ranks = {'valid': trainer.evaluator.last_ranks}
    test_result = trainer.evaluate(test_data, load_best_model=False, desc='Test')
    ranks['test'] = trainer.evaluator.last_ranks
    digits = config['metric_decimal_place']
    logger.info(set_color('best valid ', 'yellow') + '\n' + results_table(valid_result, config['metrics'], digits))
    logger.info(set_color('test result', 'yellow') + '\n' + results_table(test_result, config['metrics'], digits))

    result = {
        'model': config['model'], 'dataset': config['dataset'],
        'valid': valid_result, 'test': test_result, 'n_params': info['n_params'],
        'best_epoch': trainer.best_epoch, 'epochs_run': len(trainer.trace),
        'stopped_by_time_budget': trainer.stopped_by_budget, 'stop_reason': trainer.stop_reason,
        'best_valid_score': best_score,
        'trace': trainer.trace, 'data_time_s': t_data, 'wall_time_s': perf_counter() - t_start,
        'checkpoint': trainer.saved_model_file if (saved and config['save_model']) else None,
        'config': {k: config.final_config_dict[k] for k in sorted(config.final_config_dict)},
        'provenance': provenance(device=config['device'], precision='fp32'),
    }
    if 'param_match' in info:
        result['param_match'] = info['param_match']
    if getattr(data, 'overlap_stats', None) is not None:       # overlapped / A-only / B-only users (overlap_ratio)
        result['data'] = data.overlap_stats
    if config['save_ranks']:                     # before result.json: its presence means "finished"
        write_ranks_atomic(ranks_path(config['result_file']), ranks)
        result['ranks_file'] = os.path.basename(ranks_path(config['result_file']))
    if config['result_file']:
        write_json_atomic(config['result_file'], result)
        logger.info(set_color('Result written to', 'green') + f" {config['result_file']}")
    for h in list(logger.handlers):   # release the log file (RecBole's init_logger adds handlers per run)
        h.flush()
    return result
