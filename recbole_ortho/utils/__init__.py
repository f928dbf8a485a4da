from recbole_ortho.utils.utils import (
    get_model, known_models, known_datasets, properties_dir, load_checkpoint, set_threads,
)

__all__ = ['get_model', 'known_models', 'known_datasets', 'properties_dir', 'load_checkpoint', 'set_threads']
