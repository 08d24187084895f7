"""Dataset adapters, built-in datasets and corruption (label noise)."""

from attributor.data.datasets import ArrayDataset, DatasetSplits, data_id, load_dataset, dataset_names
from attributor.data.noise import flip_labels

__all__ = ["ArrayDataset", "DatasetSplits", "data_id", "dataset_names", "flip_labels", "load_dataset"]
