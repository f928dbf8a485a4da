"""RecBole-style hyper-parameter search for recbole_ortho models, selected on the VALIDATION score.

    python run_hyper.py --model=ABXI_GCA --dataset=food_kitchen --config_files=my.yaml \\
        --params_file=properties/hyper/abxi_gca.hyper --output_file=hyper_abxi_gca.result [--algo=exhaustive]

As RecBole's run_hyper.py: the .hyper file holds one line per parameter (``name choice [..]``,
``name uniform low,high``, ``name loguniform low,high``, ``name quniform low,high,q``); RecBole's
``HyperTuning`` runs the trials and keeps the one with the best *validation* score
(``valid_metric`` on ``valid_domain``; test metrics never select). ``--output_file`` gets
RecBole's text export; ``<output_file>.json`` every trial's parameters, validation and test
results and result file, and names the best trial's result file.
"""

import argparse
import json
import os
import sys


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--model', required=True)
    p.add_argument('--dataset', required=True)
    p.add_argument('--config_files', default=None, help='space-separated yaml files fixed for every trial')
    p.add_argument('--params_file', required=True, help='RecBole .hyper file')
    p.add_argument('--output_file', default='hyper.result')
    p.add_argument('--algo', default='exhaustive', choices=['exhaustive', 'random', 'bayes'],
                   help='exhaustive grid (RecBole), random search or TPE (hyperopt)')
    p.add_argument('--max_evals', type=int, default=20, help='trials for random / bayes')
    a, extra = p.parse_known_args(argv)
    fixed = a.config_files.split() if a.config_files else None
    for f in (fixed or []) + [a.params_file]:
        if not os.path.isfile(f):
            print(f'error: file not found: {f}', file=sys.stderr)
            return 2
    trial_dir = os.path.splitext(os.path.abspath(a.output_file))[0] + '_trials'
    os.makedirs(trial_dir, exist_ok=True)
    overrides = {}
    for arg in extra:                               # --key=value settings fixed for every trial
        if arg.startswith('--') and '=' in arg:
            k, v = arg[2:].split('=', 1)
            overrides[k] = v
    trials = []
    sys.argv = sys.argv[:1]

    from recbole_ortho.quick_start import run_recbole_ortho

    def objective(config_dict, config_file_list):
        import yaml
        n = len(trials)
        cfg = {k: yaml.safe_load(v) for k, v in overrides.items()}
        cfg.update(config_dict)
        cfg.update(result_file=os.path.join(trial_dir, f'trial_{n:03d}.json'), save_model=False, show_progress=False)
        res = run_recbole_ortho(model=a.model, dataset=a.dataset, config_file_list=config_file_list,
                                config_dict=cfg, saved=False)
        trials.append({'trial': n, 'params': dict(config_dict), 'valid_score': res['best_valid_score'],
                       'valid': res['valid'], 'test': res['test'], 'result_file': cfg['result_file']})
        return {'best_valid_score': res['best_valid_score'], 'valid_score_bigger': True,
                'best_valid_result': res['valid'], 'test_result': res['test']}

    from recbole.trainer import HyperTuning
    algo = a.algo
    if algo != 'exhaustive':
        from hyperopt import rand, tpe
        algo = rand.suggest if algo == 'random' else tpe.suggest
    hp = HyperTuning(objective, algo=algo, params_file=a.params_file, fixed_config_file_list=fixed,
                     max_evals=a.max_evals)
    hp.run()
    hp.export_result(output_file=a.output_file)
    best = max(trials, key=lambda t: t['valid_score'])          # selected on validation only
    summary = {'model': a.model, 'dataset': a.dataset, 'params_file': a.params_file, 'algo': a.algo,
               'selected_on': 'validation (valid_metric on valid_domain)', 'best_trial': best['trial'],
               'best_params': best['params'], 'best_valid_score': best['valid_score'],
               'best_result_file': best['result_file'], 'trials': trials}
    tmp = a.output_file + '.json.tmp'
    with open(tmp, 'w') as f:
        json.dump(summary, f, indent=1, default=str)
    os.replace(tmp, a.output_file + '.json')
    print(f"best trial {best['trial']}: {best['params']} (valid score {best['valid_score']:.4f}); "
          f"result: {best['result_file']}")
    return 0


if __name__ == '__main__':
    sys.exit(main())
