"""Dataset registry and the lazy `Split` container with a stable identity.

A `Split` holds labels, dataset indices and a *reader*: a callable taking positions (an int64
array, 0..N-1) and returning those images as float32 (n, C, H, W) in [0, 1]. Images are decoded
only when read (`read`, `batches`); `images` materialises the whole split for small splits and
legacy callers. `Split(name, images, labels, indices, num_classes)` with an in-memory tensor still
works (its reader slices the tensor).
"""

from __future__ import annotations

import hashlib
import inspect
from dataclasses import dataclass
from typing import Callable, Iterator

from pathlib import Path

import numpy as np
import torch

from bench.core.errors import UserError
from bench.core.registry import Registry


_FILE_DIGESTS: dict[tuple, str] = {}


def file_digest(path) -> str:
    """sha256 of a file's bytes, computed once per (path, size, modification time) in this process."""
    path = Path(path).resolve()
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _FILE_DIGESTS:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _FILE_DIGESTS[key] = h.hexdigest()
    return _FILE_DIGESTS[key]


def array_digest(*arrays) -> str:
    """sha256 over arrays' dtypes, shapes and bytes (the content of an in-memory dataset)."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(np.asarray(a))
        h.update(f"{a.dtype}|{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def stat_digest(root, files) -> str:
    """sha256 over the files' relative names, sizes and modification times: a folder of images' identity
    without reading every image (a replaced or edited file changes its size or time)."""
    h = hashlib.sha256()
    for name in files:
        st = (Path(root) / name).stat()
        h.update(f"{name}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


class TensorReader:
    """Reads rows of an in-memory (N, C, H, W) tensor."""

    def __init__(self, images: torch.Tensor):
        self.images = images

    def __call__(self, positions: np.ndarray) -> torch.Tensor:
        return self.images[torch.as_tensor(positions, dtype=torch.long)]


class TakeReader:
    """A reader restricted to some of its positions (nested restrictions are flattened)."""

    def __init__(self, base: Callable[[np.ndarray], torch.Tensor], positions: np.ndarray):
        positions = np.asarray(positions, dtype=np.int64)
        if isinstance(base, TakeReader):
            base, positions = base.base, base.positions[positions]
        self.base, self.positions = base, positions

    def __call__(self, positions: np.ndarray) -> torch.Tensor:
        return self.base(self.positions[positions])


@dataclass(frozen=True)
class Batch:
    """Consecutive positions of a split with their images, labels and dataset indices."""

    positions: np.ndarray  # positions in the split (0..N-1)
    images: torch.Tensor  # float32 (n, C, H, W) in [0, 1]
    labels: torch.Tensor  # (n,) long
    indices: np.ndarray  # dataset indices of these positions

    def __len__(self) -> int:
        return len(self.positions)


class Split:
    """Labels, indices and a reader of images by position; images are decoded only when read."""

    def __init__(self, name: str, images: torch.Tensor | None = None, labels=None, indices=None, num_classes: int = 0,
                 *, reader: Callable[[np.ndarray], torch.Tensor] | None = None, content: str | None = None):
        if labels is None:
            raise ValueError(f"Split {name!r} needs labels")
        if (images is None) == (reader is None):
            raise ValueError(f"Split {name!r} needs exactly one of images (a tensor) or reader (a callable)")
        self.name = str(name)
        self.labels = torch.as_tensor(labels, dtype=torch.long)
        n = len(self.labels)
        self.indices = np.arange(n, dtype=np.int64) if indices is None else np.asarray(indices, dtype=np.int64)
        if self.indices.shape != (n,):
            raise ValueError(f"Split {name!r}: {n} labels but indices of shape {self.indices.shape}")
        if images is not None and len(images) != n:
            raise ValueError(f"Split {name!r}: {len(images)} images but {n} labels")
        self.num_classes = int(num_classes)
        self.content = None if content is None else str(content)
        self._reader = TensorReader(images) if reader is None else reader
        self._images = images
        self._shape: tuple | None = None
        self.class_names: tuple[str, ...] | None = None  # class i's name, when the dataset declares them

    # -- reading -------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def reader(self) -> Callable[[np.ndarray], torch.Tensor]:
        return self._reader

    @property
    def lazy(self) -> bool:
        """Whether images are decoded on demand (not an in-memory tensor)."""
        return not isinstance(self._reader, TensorReader)

    def _positions(self, positions) -> np.ndarray:
        pos = np.asarray(positions)
        if pos.size == 0:
            return np.zeros(0, dtype=np.int64)
        if pos.ndim != 1 or pos.dtype.kind not in "iu":
            raise TypeError(f"Split {self.name!r}: positions must be a 1-D integer array, got {pos.dtype} {pos.shape}")
        pos = pos.astype(np.int64, copy=False)
        lo, hi = int(pos.min()), int(pos.max())
        if lo < 0 or hi >= len(self):
            raise IndexError(f"Split {self.name!r}: position {lo if lo < 0 else hi} out of range 0..{len(self) - 1}")
        return pos

    def read(self, positions) -> torch.Tensor:
        """The images at these positions (0..N-1), float32 (n, C, H, W), in the order given."""
        pos = self._positions(positions)
        if len(pos) == 0:
            return torch.zeros((0, *self.shape)) if len(self) else torch.zeros(0)
        if self._images is not None:
            return self._images[torch.as_tensor(pos)]
        out = self._reader(pos)
        if len(out) != len(pos):
            raise RuntimeError(f"Split {self.name!r}: reader returned {len(out)} images for {len(pos)} positions")
        return out

    def batches(self, batch_size: int, prefetch: bool | None = None) -> Iterator[Batch]:
        """Batches of consecutive positions, in order, covering every position once. With `prefetch`
        (default: for a lazy split, whose reader decodes files), the next batch is read in a background
        thread while the caller works on this one (the same batches; a reader's error comes out in order)."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size <= 0:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        starts = range(0, len(self), int(batch_size))

        def make(start: int) -> Batch:
            pos = np.arange(start, min(start + int(batch_size), len(self)), dtype=np.int64)
            return Batch(pos, self.read(pos), self.labels[torch.as_tensor(pos)], self.indices[pos])

        if not (self.lazy if prefetch is None else prefetch) or len(starts) < 2:
            for start in starts:
                yield make(start)
            return
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(1, thread_name_prefix="authbench-prefetch") as pool:
            ahead = pool.submit(make, starts[0])
            try:
                for nxt in list(starts[1:]) + [None]:
                    batch = ahead.result()
                    ahead = pool.submit(make, nxt) if nxt is not None else None
                    yield batch
            finally:
                if ahead is not None:
                    ahead.cancel()

    @property
    def images(self) -> torch.Tensor:
        """All images (N, C, H, W), read once and cached: for small splits and legacy callers only."""
        if self._images is None:
            self._images = self.read(np.arange(len(self), dtype=np.int64))
        return self._images

    @property
    def shape(self) -> tuple:
        """(C, H, W) of one image (position 0)."""
        if self._shape is None:
            if self._images is not None and self._images.ndim > 1:
                self._shape = tuple(self._images.shape[1:])
            elif len(self) == 0:
                raise ValueError(f"Split {self.name!r} is empty: it has no image shape")
            else:
                self._shape = tuple(self.read(np.zeros(1, dtype=np.int64)).shape[1:])
        return self._shape

    # -- restricting -----------------------------------------------------------------------------

    def subset(self, n: int, seed: int) -> "Split":
        """A seeded random subset of n samples (all of them when n <= 0 or n >= N)."""
        if n <= 0 or n >= len(self.indices):
            return self
        order = np.sort(np.random.default_rng(seed).choice(len(self.indices), size=n, replace=False))
        return self.take(order)

    def take(self, positions) -> "Split":
        """This split restricted to these positions, in that order (lazy: reads nothing)."""
        pos = self._positions(positions)
        rows = torch.as_tensor(pos)
        if not self.lazy:  # an in-memory split stays one (as before: the rows are copied)
            part = Split(self.name, self._images[rows], self.labels[rows], self.indices[pos], self.num_classes,
                         content=self.content)
            part.class_names = self.class_names
            return part
        part = Split(self.name, None, self.labels[rows], self.indices[pos], self.num_classes,
                     reader=TakeReader(self._reader, pos), content=self.content)
        if self._images is not None:  # already materialised here: keep those rows (a cache, not pickled)
            part._images = self._images[rows]
        part._shape = self._shape
        part.class_names = self.class_names
        return part

    # -- identity --------------------------------------------------------------------------------

    @property
    def identity(self) -> dict:
        """Dataset + split + a digest of the exact indices (+ the content digest when given), for cache keys."""
        digest = hashlib.sha256(np.ascontiguousarray(self.indices, dtype=np.int64).tobytes()).hexdigest()[:16]
        ident = {"dataset": self.name, "n": int(len(self.indices)), "indices": digest}
        if self.content is not None:
            ident["content"] = self.content
        return ident

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        if self.lazy:
            state["_images"] = None  # a cache: the reader reads the images again
        return state

    def __repr__(self) -> str:
        kind = f"lazy {type(self._reader).__name__}" if self.lazy else "in memory"
        return f"Split({self.name!r}, n={len(self)}, num_classes={self.num_classes}, {kind})"


def check_labels(labels, num_classes: int, what: str) -> None:
    """One-line UserError unless every label lies in [0, num_classes)."""
    values = np.asarray(labels)
    if values.size == 0:
        return
    bad = values[(values < 0) | (values >= num_classes)]
    if bad.size:
        raise UserError(f"{what}: label {int(bad.flat[0])} is outside [0, {num_classes}) "
                        f"({bad.size} of {values.size} labels); labels must be class ids 0..{num_classes - 1}")


def check_lengths(n_images: int, n_labels: int, what: str) -> None:
    if n_images != n_labels:
        raise UserError(f"{what}: {n_images} images but {n_labels} labels; images and labels must have the same length")


@dataclass(frozen=True)
class Dataset:
    """A registered dataset: its name, a one-line description, and its loader `load(split, **options)`,
    whose keyword arguments (beyond split, subset, subset_seed) are the dataset's own [data] options."""

    name: str
    description: str
    load: Callable[..., Split]

    @property
    def options(self) -> list[str]:
        """The [data] options this dataset takes beyond the common keys (its loader's keyword arguments)."""
        return [p for p in inspect.signature(self.load).parameters if p not in ("split", "subset", "subset_seed")]

    def check_options(self, options: dict) -> None:
        bad = sorted(set(options) - set(self.options))
        if bad:
            raise UserError(f"dataset {self.name!r} has no option {bad[0]!r}; valid [data] options: "
                            f"{', '.join(self.options) or '(none)'}")


# every dataset: built-ins register with @register_dataset in the modules named here (imported on first
# lookup); third-party ones are `authbench.datasets` entry points naming a Dataset
DATASETS: Registry[Dataset] = Registry(
    "dataset", "authbench.datasets", base=Dataset, instances=True, paths=False,
    modules=("bench.data.classes", "bench.data.digits", "bench.data.synthetic", "bench.data.torchvision_sets",
             "bench.data.vision"))


def register_dataset(name: str, description: str):
    """Decorator of a loader `fn(split, **options) -> Split`: registers it as dataset `name`."""

    def wrap(fn):
        DATASETS.register(Dataset(name=name, description=description, load=fn))
        return fn

    return wrap


def load_dataset(name: str, split: str, subset: int = 0, subset_seed: int = 0, **options) -> Split:
    """Load a registered dataset split by name, optionally a seeded subset of it. Loaders that take
    `subset` decode only those samples; the result is the same Split as loading all and subsetting."""
    dataset = DATASETS.get(name)
    dataset.check_options(options)
    if subset > 0 and "subset" in inspect.signature(dataset.load).parameters:
        out = dataset.load(split, subset=subset, subset_seed=subset_seed, **options)
    else:
        out = dataset.load(split, **options).subset(subset, subset_seed)
    if subset > len(out):  # a subset the split cannot give is an error, not quietly the whole split
        raise UserError(f"[data] subset = {subset} is larger than {name!r} split {split!r} ({len(out)} samples); "
                        f"give at most {len(out)}, or 0 for the whole split")
    return out
