"""A training loader whose batches are a pure function of (seed, iteration).

detectron2's training loader streams an infinite shuffled sequence through worker
processes whose random state advances with every sample; a run resumed from a checkpoint
therefore sees other images and other augmentations than the uninterrupted run would
have. Here:

- the global batch of iteration `i` is samples `i*B .. i*B+B-1` of the sequence
  "epoch 0 permutation, epoch 1 permutation, ...", each permutation drawn from
  (seed, epoch); a process of rank `r` among `w` takes its slice of `B // w` samples,
  so the data order does not even depend on the number of processes;
- each sample is mapped (decoded + augmented) under `random`/`numpy`/`torch` generators
  seeded from (seed, iteration, position in the batch), whichever process or worker
  maps it;
- the loader starts at `start_iter`, which the trainer sets when it resumes.

Batches are not grouped by aspect ratio: Mask2Former's training mappers crop or pad
images to fixed sizes, and the model pads each batch to a common size anyway.
"""
import contextlib
import functools
import logging
import random
from typing import Callable, Iterator, List, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

__all__ = ["derive_seed", "seeded_rng", "IterationBatchDataset", "ResumableTrainLoader"]

logger = logging.getLogger(__name__)


def derive_seed(*entropy: int) -> int:
    """A well-mixed 31-bit seed from a few non-negative integers (seed, iteration, ...)."""
    return int(np.random.SeedSequence([int(e) for e in entropy]).generate_state(1)[0] >> 1)


@contextlib.contextmanager
def seeded_rng(seed: int):
    """Seed Python's, numpy's and torch's (CPU) global generators for the duration of the
    block, restoring their previous states afterwards."""
    py_state, np_state, torch_state = random.getstate(), np.random.get_state(), torch.get_rng_state()
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
        torch.set_rng_state(torch_state)


class IterationBatchDataset(Dataset):
    """Item `i` is this process's share of the mapped training batch of iteration `i`.

    Args:
        dataset: indexable sequence of dataset dicts (e.g. detectron2's DatasetFromList).
        mapper: callable dict -> dict or None (None = skip this sample, take another).
        total_batch_size: images per iteration summed over all processes.
        rank, world_size: this process's slice of every batch.
        seed: the run's seed.
        shuffle: False keeps the dataset order (epoch after epoch).
    """

    def __init__(
        self,
        dataset: Sequence,
        mapper: Callable,
        total_batch_size: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        shuffle: bool = True,
    ):
        if len(dataset) == 0:
            raise ValueError("The training dataset is empty.")
        if total_batch_size <= 0 or total_batch_size % world_size != 0:
            raise ValueError(
                f"SOLVER.IMS_PER_BATCH ({total_batch_size}) must be a positive multiple of the "
                f"number of processes ({world_size})"
            )
        self.dataset = dataset
        self.mapper = mapper
        self.total_batch_size = total_batch_size
        self.batch_size = total_batch_size // world_size
        self.rank = rank
        self.seed = seed
        self.shuffle = shuffle

    def __len__(self) -> int:
        # Iterations are unbounded; the sampler decides which ones are read.
        return 2**62

    @functools.lru_cache(maxsize=2)
    def _epoch_order(self, seed: int, epoch: int) -> np.ndarray:
        n = len(self.dataset)
        if not self.shuffle:
            return np.arange(n)
        return np.random.default_rng([seed, epoch]).permutation(n)

    def dataset_index(self, iteration: int, position: int) -> int:
        """Index into the dataset of the sample at `position` of the global batch."""
        k = iteration * self.total_batch_size + position
        epoch, offset = divmod(k, len(self.dataset))
        return int(self._epoch_order(self.seed, epoch)[offset])

    def __getitem__(self, iteration: int) -> List[dict]:
        first = self.rank * self.batch_size
        return [self._map(iteration, pos) for pos in range(first, first + self.batch_size)]

    def _map(self, iteration: int, position: int) -> dict:
        index = self.dataset_index(iteration, position)
        sample_seed = derive_seed(self.seed, iteration, position)
        fallback = np.random.default_rng(sample_seed)
        for attempt in range(100):
            with seeded_rng(derive_seed(sample_seed, attempt)):
                mapped = self.mapper(self.dataset[index])
            if mapped is not None:
                return mapped
            if attempt == 3:
                logger.warning("Mapper keeps skipping samples (last: dataset index %d)", index)
            index = int(fallback.integers(len(self.dataset)))
        raise RuntimeError(
            "The dataset mapper returned None for 100 samples in a row; check the training "
            "data (DATASETS.TRAIN) and the mapper (INPUT.DATASET_MAPPER_NAME)."
        )


class _IterationSampler(Sampler):
    def __init__(self, start_iter: int):
        self.start_iter = start_iter

    def __iter__(self) -> Iterator[int]:
        it = self.start_iter
        while True:
            yield it
            it += 1


def _no_collate(batch):
    return batch


class ResumableTrainLoader:
    """Iterable over the training batches (lists of mapped dicts) from `start_iter` on.

    The underlying `DataLoader` (and its worker processes) is only started at the first
    `next()`, so the trainer can set `start_iter` / `seed` after building it.
    """

    def __init__(self, dataset: IterationBatchDataset, num_workers: int = 0, start_iter: int = 0):
        self.dataset = dataset
        self.num_workers = num_workers
        self.start_iter = start_iter

    @property
    def seed(self) -> int:
        return self.dataset.seed

    @seed.setter
    def seed(self, value: int) -> None:
        self.dataset.seed = int(value)

    def _start(self) -> Iterator[List[dict]]:
        loader = DataLoader(
            self.dataset,
            batch_size=None,
            sampler=_IterationSampler(self.start_iter),
            num_workers=self.num_workers,
            collate_fn=_no_collate,
            # Its own generator: starting the loader must not draw from torch's global
            # one, which the training step seeds per iteration.
            generator=torch.Generator().manual_seed(derive_seed(self.seed, self.start_iter)),
        )
        return iter(loader)

    def __iter__(self) -> Iterator[List[dict]]:
        return _LazyIterator(self._start)


class _LazyIterator:
    def __init__(self, start: Callable[[], Iterator]):
        self._start = start
        self._it: Optional[Iterator] = None

    def __iter__(self):
        return self

    def __next__(self):
        if self._it is None:
            self._it = self._start()
        return next(self._it)
