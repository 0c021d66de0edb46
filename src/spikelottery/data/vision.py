"""CIFAR10 and CIFAR100 from the official python-pickle files in a local folder.

The files are read by spikelottery itself (the format is simple: each batch file is a
pickled dict with ``data``, a ``uint8`` array ``[N, 3072]`` of channel-major 32x32
images, and ``labels`` / ``fine_labels``), through an unpickler that only accepts the
few numpy constructors the format uses, so a tampered file cannot run code. The
datasets behave like ``torchvision.datasets.CIFAR10`` (same ``data``, ``targets``,
``classes`` and ``class_to_idx``; items are PIL images before the transform).
torchvision (``pip install "spikelottery[vision]"``) provides the transforms and, with
``download=True``, the download.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from ..errors import SpikeLotteryError

__all__ = [
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "CIFAR100_MEAN",
    "CIFAR100_STD",
    "CIFARDataset",
    "cifar10",
    "cifar100",
    "cifar_transform",
]

CIFAR10_MEAN: tuple[float, float, float] = (0.4914, 0.4822, 0.4465)
CIFAR10_STD: tuple[float, float, float] = (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN: tuple[float, float, float] = (0.5071, 0.4865, 0.4409)
CIFAR100_STD: tuple[float, float, float] = (0.2673, 0.2564, 0.2762)

_CIFAR_PAGE = "https://www.cs.toronto.edu/~kriz/cifar.html"

# Per dataset: folder, archive, train files, test files, meta file, label key, names key.
_SPECS: dict[str, dict[str, Any]] = {
    "cifar10": {
        "title": "CIFAR-10",
        "folder": "cifar-10-batches-py",
        "archive": "cifar-10-python.tar.gz",
        "train": [f"data_batch_{i}" for i in range(1, 6)],
        "test": ["test_batch"],
        "meta": "batches.meta",
        "label_key": "labels",
        "names_key": "label_names",
        "num_classes": 10,
        "mean": CIFAR10_MEAN,
        "std": CIFAR10_STD,
    },
    "cifar100": {
        "title": "CIFAR-100",
        "folder": "cifar-100-python",
        "archive": "cifar-100-python.tar.gz",
        "train": ["train"],
        "test": ["test"],
        "meta": "meta",
        "label_key": "fine_labels",
        "names_key": "fine_label_names",
        "num_classes": 100,
        "mean": CIFAR100_MEAN,
        "std": CIFAR100_STD,
    },
}

# The only globals a CIFAR pickle needs (numpy 1 and 2 module paths; ``_codecs.encode``
# is how Python 3 protocol-2 pickles store bytes).
_ALLOWED_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),
}


def _require_torchvision() -> Any:
    try:
        import torchvision
    except ImportError as exc:
        raise ImportError(
            "the CIFAR loaders need torchvision (transforms and download); install it with "
            'pip install "spikelottery[vision]"'
        ) from exc
    return torchvision


class _DataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR file")
        if module.startswith("numpy.core."):  # numpy 2 renamed numpy.core to numpy._core
            module = "numpy._core." + module.removeprefix("numpy.core.")
        return super().find_class(module, name)


def _load_pickle(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            entry = _DataUnpickler(f, encoding="latin1").load()
    except OSError:
        raise  # cannot open or read it: the error names the file already
    except Exception as exc:
        # Anything else the allowed constructors can be made to raise (LookupError from
        # _codecs.encode, MemoryError from a huge ndarray, ...) means a damaged file.
        raise SpikeLotteryError(
            f"{path} is not a CIFAR python-pickle file ({type(exc).__name__}: {exc}); "
            f"re-extract the archive from {_CIFAR_PAGE}"
        ) from exc
    if not isinstance(entry, dict):
        raise SpikeLotteryError(f"{path} holds a {type(entry).__name__}, expected a dict")
    # Python 2 pickles decode to str keys; files re-saved from Python 3 may use bytes.
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in entry.items()}


def _labels(path: Path, label_key: str, raw: Any) -> list[int]:
    """The integer labels of a batch file; anything else is refused naming the file.

    A float label (``3.7``) is not truncated, and a string is not parsed: both mean the
    file is not an official CIFAR batch.
    """
    if isinstance(raw, np.ndarray):
        if raw.ndim != 1:
            raise SpikeLotteryError(
                f"{path}: {label_key!r} must be a flat list of integer labels, got an array "
                f"of shape {list(raw.shape)}; re-extract the archive from {_CIFAR_PAGE}"
            )
        raw = list(raw)
    if not isinstance(raw, (list, tuple)):
        raise SpikeLotteryError(
            f"{path}: {label_key!r} must be a list of integer labels, got "
            f"{type(raw).__name__}; re-extract the archive from {_CIFAR_PAGE}"
        )
    for i, value in enumerate(raw):
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
            raise SpikeLotteryError(
                f"{path}: label {i} under {label_key!r} is {value!r} "
                f"({type(value).__name__}), not an integer class index; re-extract the "
                f"archive from {_CIFAR_PAGE}"
            )
    return [int(v) for v in raw]


def _read_batch(path: Path, label_key: str, num_classes: int) -> tuple[np.ndarray, list[int]]:
    entry = _load_pickle(path)
    if "data" not in entry or label_key not in entry:
        raise SpikeLotteryError(
            f"{path} lacks the key 'data' or {label_key!r} (it has {sorted(entry)}); "
            "is it a batch of the other CIFAR variant?"
        )
    try:
        data = np.asarray(entry["data"])
    except (ValueError, TypeError, MemoryError) as exc:
        raise SpikeLotteryError(
            f"{path}: 'data' is not an image array ({type(exc).__name__}: {exc}); re-extract "
            f"the archive from {_CIFAR_PAGE}"
        ) from None
    labels = _labels(path, label_key, entry[label_key])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise SpikeLotteryError(
            f"{path}: 'data' must be uint8 [N, 3072], got {data.dtype} {list(data.shape)}"
        )
    if len(labels) != data.shape[0]:
        raise SpikeLotteryError(
            f"{path}: {data.shape[0]} images but {len(labels)} labels under {label_key!r}"
        )
    if labels and not (min(labels) >= 0 and max(labels) < num_classes):
        raise SpikeLotteryError(
            f"{path}: labels must be in [0, {num_classes}), got range "
            f"[{min(labels)}, {max(labels)}]"
        )
    return data, labels


def _locate(spec: dict[str, Any], root: Path, train: bool) -> tuple[Path, list[Path]]:
    how = (
        f"download {spec['archive']} from {_CIFAR_PAGE} and extract it into {root}, or pass "
        "download=True (spikelottery run --download) on a machine with internet access"
    )
    if not root.is_dir():
        raise FileNotFoundError(f"{spec['title']} root {str(root)!r} does not exist: {how}")
    folder = root / spec["folder"]
    names = spec["train" if train else "test"] + [spec["meta"]]
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{spec['title']} files missing under {str(root)!r}: "
            + ", ".join(f"{spec['folder']}/{n}" for n in missing)
            + f"; {how}"
        )
    return folder, [folder / n for n in names[:-1]]


def cifar_transform(dataset: str = "cifar10", *, augment: bool = False) -> Callable[[Any], Any]:
    """The standard CIFAR transform: ``ToTensor`` then ``Normalize`` with the data set's
    per-channel mean and std; with ``augment``, a random 32x32 crop of the image padded by
    4 pixels and a random horizontal flip come first.

    Args:
        dataset: ``"cifar10"`` or ``"cifar100"`` (selects the mean and std).
        augment: Add the standard training augmentation.

    >>> from PIL import Image
    >>> t = cifar_transform("cifar10")
    >>> tuple(t(Image.new("RGB", (32, 32))).shape)
    (3, 32, 32)
    """
    if dataset not in _SPECS:
        raise ValueError(f"dataset must be one of {tuple(_SPECS)}, got {dataset!r}")
    transforms = _require_torchvision().transforms
    spec = _SPECS[dataset]
    steps: list[Any] = []
    if augment:
        steps += [transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip()]
    steps += [transforms.ToTensor(), transforms.Normalize(spec["mean"], spec["std"])]
    return transforms.Compose(steps)


class CIFARDataset(Dataset):
    """CIFAR10 or CIFAR100 images read from the official python-pickle files.

    Use :func:`cifar10` / :func:`cifar100` to build one. Attributes as in torchvision:
    ``data`` (``uint8`` ``[N, 32, 32, 3]``), ``targets`` (list of int), ``classes``,
    ``class_to_idx``; an item is ``(transform(PIL image), target)``.
    """

    def __init__(
        self,
        dataset: str,
        root: str | Path,
        train: bool = True,
        *,
        download: bool = False,
        transform: Callable[[Any], Any] | None = None,
        target_transform: Callable[[int], Any] | None = None,
        augment: bool = False,
    ) -> None:
        if dataset not in _SPECS:
            raise ValueError(f"dataset must be one of {tuple(_SPECS)}, got {dataset!r}")
        if not isinstance(train, bool):
            raise TypeError(f"train must be a bool, got {train!r}")
        spec = _SPECS[dataset]
        self.dataset = dataset
        self.root = Path(root).expanduser()
        self.train = train
        self.augment = bool(augment)
        if download:
            tv = _require_torchvision()
            fetch = tv.datasets.CIFAR10 if dataset == "cifar10" else tv.datasets.CIFAR100
            fetch(str(self.root), train=train, download=True)  # checks the md5 sums
        if transform is None:
            # Augmentation belongs to training; the test split is never augmented.
            transform = cifar_transform(dataset, augment=self.augment and train)
        self.transform = transform
        self.target_transform = target_transform

        folder, files = _locate(spec, self.root, train)
        parts, targets = [], []
        for path in files:
            data, labels = _read_batch(path, spec["label_key"], spec["num_classes"])
            parts.append(data)
            targets.extend(labels)
        self.data: np.ndarray = np.concatenate(parts).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        self.targets: list[int] = targets
        meta = _load_pickle(folder / spec["meta"])
        names = meta.get(spec["names_key"])
        if not isinstance(names, (list, tuple)) or len(names) != spec["num_classes"]:
            raise SpikeLotteryError(
                f"{folder / spec['meta']}: expected {spec['num_classes']} class names under "
                f"{spec['names_key']!r}, got {type(names).__name__}; re-extract the archive "
                f"from {_CIFAR_PAGE}"
            )
        self.classes: list[str] = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
        self.class_to_idx: dict[str, int] = {c: i for i, c in enumerate(self.classes)}

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        from PIL import Image  # a torchvision dependency; transforms expect PIL images

        img: Any = Image.fromarray(self.data[index])
        target: Any = self.targets[index]
        if self.transform is not None:
            img = self.transform(img)
        if self.target_transform is not None:
            target = self.target_transform(target)
        return img, target

    def __repr__(self) -> str:
        split = "train" if self.train else "test"
        return (
            f"{type(self).__name__}({self.dataset!r}, split={split!r}, n={len(self)}, "
            f"root={str(self.root)!r}, augment={self.augment and self.train})"
        )


def cifar10(
    root: str | Path,
    train: bool = True,
    *,
    download: bool = False,
    transform: Callable[[Any], Any] | None = None,
    target_transform: Callable[[int], Any] | None = None,
    augment: bool = False,
) -> CIFARDataset:
    """CIFAR-10 from ``root/cifar-10-batches-py`` (``data_batch_1..5``, ``test_batch``,
    ``batches.meta``).

    Args:
        root: Folder that holds ``cifar-10-batches-py``.
        train: Training (50000 images) or test (10000) split.
        download: Fetch and extract the archive first (needs internet; md5-checked by
            torchvision).
        transform: Replaces the default transform (:func:`cifar_transform`). It receives
            a PIL image.
        target_transform: Applied to the integer label.
        augment: Random crop (padding 4) and horizontal flip in the default transform;
            applied to the training split only.

    Returns:
        A :class:`CIFARDataset`; items are ``([3, 32, 32] normalised tensor, label)``.

    Raises:
        FileNotFoundError: ``root`` or one of the files is missing (the message names
            them and where to get them).
        ImportError: torchvision is not installed.
    """
    return CIFARDataset(
        "cifar10",
        root,
        train,
        download=download,
        transform=transform,
        target_transform=target_transform,
        augment=augment,
    )


def cifar100(
    root: str | Path,
    train: bool = True,
    *,
    download: bool = False,
    transform: Callable[[Any], Any] | None = None,
    target_transform: Callable[[int], Any] | None = None,
    augment: bool = False,
) -> CIFARDataset:
    """CIFAR-100 (fine labels) from ``root/cifar-100-python`` (``train``, ``test``, ``meta``).

    Arguments, return value and errors as in :func:`cifar10`.
    """
    return CIFARDataset(
        "cifar100",
        root,
        train,
        download=download,
        transform=transform,
        target_transform=target_transform,
        augment=augment,
    )
