from recbole_ortho.trainer.trainer import CDSRTrainer, NonFiniteLossError, results_table

__all__ = ['CDSRTrainer', 'NonFiniteLossError', 'results_table']
