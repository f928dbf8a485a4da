from recbole_ortho.data.dataset import (CrossDomainSeqDataset, SeqData, create_dataset, ensure_prepared,
                                        files_signature)
from recbole_ortho.data.dataloader import TrainDataLoader, EvalDataLoader, data_preparation

__all__ = ['CrossDomainSeqDataset', 'SeqData', 'create_dataset', 'ensure_prepared', 'files_signature',
           'TrainDataLoader', 'EvalDataLoader', 'data_preparation']
