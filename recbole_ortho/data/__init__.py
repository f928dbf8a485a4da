from recbole_ortho.data.dataset import CrossDomainSeqDataset, SeqData, create_dataset
from recbole_ortho.data.dataloader import TrainDataLoader, EvalDataLoader, data_preparation

__all__ = ['CrossDomainSeqDataset', 'SeqData', 'create_dataset',
           'TrainDataLoader', 'EvalDataLoader', 'data_preparation']
