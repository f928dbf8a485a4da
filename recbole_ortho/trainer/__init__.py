from recbole_ortho.trainer.trainer import CDSRTrainer, results_table

__all__ = ['CDSRTrainer', 'results_table']
