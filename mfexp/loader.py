"""uint8 arrays -> DataLoaders. Augmentation runs here, per example, inside the worker processes."""
from __future__ import annotations

import os

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from mfexp.data import ImageSet
from mfexp.policy import seed_pipeline


class ArrayDataset(Dataset):
    """Serves uint8 CHW tensors; the model side converts to float on the device (4x less to copy)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, pipeline=None):
        self.images, self.labels, self.pipeline = images, labels, pipeline

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        img = self.images[i]
        if self.pipeline is not None:
            img = self.pipeline(image=img)["image"]
            if img.ndim == 2:  # some transforms drop the channel axis of grayscale images
                img = img[..., None]
        return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))), int(self.labels[i])


def _seed_worker(worker_id: int) -> None:
    # Each worker gets its own reproducible augmentation stream, derived from the loader's
    # seeded generator; OpenCV's own threads would only fight the workers for the cores.
    import cv2

    cv2.setNumThreads(1)
    info = torch.utils.data.get_worker_info()
    seed = info.seed % 2**32
    np.random.seed(seed)
    if info.dataset.pipeline is not None:
        seed_pipeline(info.dataset.pipeline, seed)


def default_workers(augmenting: bool) -> int:
    if not augmenting:
        return 0  # the arrays are already decoded: a worker would only add IPC
    return max(1, min(4, (os.cpu_count() or 2) // 2))


def make_loader(data: ImageSet, batch_size: int, *, train: bool, pipeline=None, num_workers: int = 0, seed: int = 0) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    if pipeline is not None and num_workers == 0:
        seed_pipeline(pipeline, seed)
    return DataLoader(
        ArrayDataset(data.images, data.labels, pipeline if train else None),
        batch_size=batch_size,
        shuffle=train,
        drop_last=train and len(data) > batch_size,  # a batch of one breaks batch norm
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        worker_init_fn=_seed_worker if num_workers > 0 else None,
        generator=generator,
        pin_memory=torch.cuda.is_available(),
    )
