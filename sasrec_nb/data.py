"""Datasets: registry, hash-checked download and cache, raw ratings → chronological sequences.

The registry maps a name to the official archive (URL + sha256) and the member that holds the
ratings. ``fetch`` uses the file in ``data/<name>/`` when it is there, downloads and checks the
archive otherwise (with `pooch`: a temporary file, moved into the cache only when the hash matches),
and with no network raises an error that names the file to place and where.

Any text file in the SASRec format (``user item`` per line, chronological per user; an optional third
column is a timestamp) loads by path, whatever its suffix; its runs get their own folders.
Every interaction is an implicit positive; ties in time keep file order; users and items with fewer
than 5 interactions are removed until none is left (the 5-core; the SASRec paper's rule).
"""
from __future__ import annotations

import hashlib
import zipfile
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from . import files
from .config import data_dir

Interaction = tuple[str, str, int]  # user, item, timestamp (file position where there is none)


class DataError(RuntimeError):
    """A data file is missing, corrupt, or unusable; the message says what to do."""


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    member: str                      # path of the ratings file inside the archive / cache folder
    parser: Callable[[Path], list[Interaction]]
    url: str | None = None
    sha256: str | None = None        # of the archive
    member_sha256: str | None = None  # of the extracted ratings file, where known
    label: str = ""

    @property
    def filename(self) -> str:
        return Path(self.member).name


def _split_lines(path: Path, sep: str | None, fields: int) -> Iterable[tuple[int, list[str]]]:
    with open(path, encoding="latin-1") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            parts = line.strip().split(sep)
            if len(parts) < fields or not all(p.strip().lstrip("-").isdigit() for p in parts[:fields]):
                raise DataError(f"{path}, line {lineno}: expected {fields} integer fields, got {line.strip()[:80]!r}")
            yield lineno, parts


def parse_ml100k(path: Path) -> list[Interaction]:
    """``u.data``: user \\t item \\t rating \\t timestamp."""
    return [(p[0], p[1], int(p[3])) for _, p in _split_lines(path, "\t", 4)]


def parse_ml1m(path: Path) -> list[Interaction]:
    """``ratings.dat``: user::item::rating::timestamp."""
    return [(p[0], p[1], int(p[3])) for _, p in _split_lines(path, "::", 4)]


def parse_ml20m(path: Path) -> list[Interaction]:
    """``ratings.csv``: userId,movieId,rating,timestamp with a header line."""
    out = []
    with open(path, encoding="utf-8") as f:
        next(f, None)
        for lineno, line in enumerate(f, 2):
            p = line.strip().split(",")
            if len(p) != 4 or not (p[0].isdigit() and p[1].isdigit() and p[3].isdigit()):
                raise DataError(f"{path}, line {lineno}: expected userId,movieId,rating,timestamp, "
                                f"got {line.strip()[:80]!r}")
            out.append((p[0], p[1], int(p[3])))
    return out


def parse_sasrec_text(path: Path) -> list[Interaction]:
    """``user item`` per line in chronological order per user (file order is time), or ``user item timestamp``
    (ordered by the timestamp; ties keep file order). Every line has the same number of columns."""
    rows = list(_split_lines(path, None, 2))
    if not rows:
        raise DataError(f"{path} holds no interaction: expected 'user item' (or 'user item timestamp') per line")
    columns = len(rows[0][1])
    for lineno, p in rows:
        if len(p) != columns or columns > 3:
            raise DataError(f"{path}, line {lineno}: {len(p)} columns where the file's first line has {columns}; "
                            "the SASRec format is 'user item' per line, or 'user item timestamp'")
    if columns == 3:
        if not all(p[2].lstrip("-").isdigit() for _, p in rows):
            bad = next((n, p) for n, p in rows if not p[2].lstrip("-").isdigit())
            raise DataError(f"{path}, line {bad[0]}: the third column must be an integer timestamp, got {bad[1][2]!r}")
        return [(p[0], p[1], int(p[2])) for _, p in rows]
    return [(p[0], p[1], lineno) for lineno, p in rows]


GROUPLENS = "https://files.grouplens.org/datasets/movielens/"
REGISTRY: dict[str, DatasetSpec] = {
    "ml-100k": DatasetSpec(
        "ml-100k", "ml-100k/u.data", parse_ml100k, GROUPLENS + "ml-100k.zip",
        "50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229",
        "06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490", "MovieLens 100K"),
    "ml-1m": DatasetSpec(
        "ml-1m", "ml-1m/ratings.dat", parse_ml1m, GROUPLENS + "ml-1m.zip",
        "a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20", None, "MovieLens 1M"),
    "ml-20m": DatasetSpec(
        "ml-20m", "ml-20m/ratings.csv", parse_ml20m, GROUPLENS + "ml-20m.zip",
        "96f243c338a8665f6bcc89c53edf6ee39162a846940de6b7c8c48aeada765ff3", None, "MovieLens 20M"),
    # not downloadable: the SASRec paper's preprocessed ML-1M, last two interactions per user removed
    "ml-1m-sasrec-trunc2": DatasetSpec(
        "ml-1m-sasrec-trunc2", "ml-1m-sasrec-trunc2.txt", parse_sasrec_text, None, None,
        "4a799352710b680436818cf774e7b0dbde4db34de134af3deef23758da95f833",
        "ML-1M stand-in (last two interactions removed)"),
}


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _check_member(spec: DatasetSpec, path: Path) -> Path:
    if spec.member_sha256 and sha256_of(path) != spec.member_sha256:
        if spec.url is None:  # nothing to download it from: never advise deleting the only copy
            raise DataError(f"{path} does not have the expected sha256 {spec.member_sha256}: the file is corrupt or "
                            f"not the one this project was built with. It cannot be downloaded; replace it with a "
                            f"good copy of {spec.filename} (keep this one until you have it).")
        raise DataError(f"{path} does not have the expected sha256 {spec.member_sha256}: the file is corrupt or "
                        f"not the official one. Delete {path.parent} and run again to download it afresh.")
    return path


def _extract(spec: DatasetSpec, archive: Path, target: Path) -> None:
    """Extract ``spec.member`` to ``target`` atomically (zipfile checks its CRC while reading)."""
    with zipfile.ZipFile(archive) as z:
        if spec.member not in z.namelist():
            raise DataError(f"{archive} has no member {spec.member}: delete it and run again")
        files.write_bytes(target, z.read(spec.member))


def _extracted_size(spec: DatasetSpec, archive: Path) -> int | None:
    """The size ``spec.member`` has inside ``archive`` (None when the archive is not there)."""
    if not archive.exists():
        return None
    with zipfile.ZipFile(archive) as z:
        return z.getinfo(spec.member).file_size if spec.member in z.namelist() else None


def download(spec: DatasetSpec, folder: Path) -> Path:
    """Download ``spec.url`` into ``folder`` (hash-checked, atomic) and return the archive's path."""
    import pooch  # imported here: only a download needs it

    folder.mkdir(parents=True, exist_ok=True)
    name = spec.url.rsplit("/", 1)[-1]
    try:
        return Path(pooch.retrieve(spec.url, known_hash=f"sha256:{spec.sha256}", fname=name, path=folder,
                                   progressbar=False))
    except ValueError as e:  # pooch: hash mismatch (the bad download is not kept)
        raise DataError(f"the download of {spec.url} does not match its sha256 {spec.sha256}; nothing was kept. "
                        f"Try again later, or place the official {name} in {folder}.") from e
    except Exception as e:  # network down, DNS, HTTP error
        raise DataError(f"could not download {spec.url} ({type(e).__name__}: {e}). Without network, place "
                        f"{spec.filename} (from {name}) at {folder / spec.filename}, or the archive at {folder / name}."
                        ) from e


def fetch(name: str, root: Path | None = None) -> Path:
    """Path of the ratings file of a registered dataset, downloading it when it is not cached."""
    if name not in REGISTRY:
        raise DataError(f"unknown dataset {name!r}: use one of {', '.join(REGISTRY)}, or the path of a text file "
                        f"in the SASRec format ('user item' per line)")
    spec = REGISTRY[name]
    folder = (root or data_dir()) / spec.name
    target = folder / spec.filename
    archive = folder / spec.url.rsplit("/", 1)[-1] if spec.url else None
    if target.exists():
        expected = _extracted_size(spec, archive) if archive else None
        if expected is None or target.stat().st_size == expected:
            return _check_member(spec, target)
        # a file cut short by an interrupted extraction (older versions wrote in place): extract it again
        if sha256_of(archive) != spec.sha256:
            raise DataError(f"{target} is {target.stat().st_size:,} bytes where {archive.name} holds {expected:,}, "
                            f"and {archive} does not match sha256 {spec.sha256}: delete both and run again")
        _extract(spec, archive, target)
        return _check_member(spec, target)
    if spec.url is None:
        raise DataError(f"{spec.label or name} cannot be downloaded: place {spec.filename} at {target}")
    if not archive.exists():
        archive = download(spec, folder)
    elif sha256_of(archive) != spec.sha256:
        raise DataError(f"{archive} does not match sha256 {spec.sha256}: delete it and run again")
    _extract(spec, archive, target)
    return _check_member(spec, target)


def is_custom(dataset: str) -> bool:
    """True for a path to a data file, False for a registered dataset name."""
    return dataset not in REGISTRY


def dataset_slug(dataset: str) -> str:
    """The folder name of a dataset's checkpoints and results.

    A registered dataset keeps its name. A custom file gets ``file-<stem>-<8 hex digits of its absolute path>``,
    so that a file named like a built-in one (``ml-100k.txt``), or two files with the same name in different
    folders, never share (or overwrite) each other's runs.
    """
    if not is_custom(dataset):
        return dataset
    path = Path(dataset).expanduser().resolve()
    return f"file-{path.stem}-{hashlib.sha256(str(path).encode()).hexdigest()[:8]}"


@dataclass
class SequenceData:
    """Chronological item sequences, one per user; items are 1..num_items (0 is padding)."""

    name: str
    sequences: list[np.ndarray]
    num_items: int
    item_ids: np.ndarray = field(repr=False)   # original id of item k at index k (index 0: padding)
    num_raw_interactions: int = 0

    @property
    def num_users(self) -> int:
        return len(self.sequences)

    @property
    def num_interactions(self) -> int:
        return int(sum(len(s) for s in self.sequences))


def k_core(interactions: list[Interaction], k: int = 5) -> list[Interaction]:
    """Drop users and items with fewer than k interactions, repeatedly, until every one has k."""
    while True:
        users = Counter(u for u, _, _ in interactions)
        items = Counter(i for _, i, _ in interactions)
        kept = [r for r in interactions if users[r[0]] >= k and items[r[1]] >= k]
        if len(kept) == len(interactions):
            return kept
        interactions = kept


def build_sequences(interactions: list[Interaction], name: str, min_count: int = 5) -> SequenceData:
    """5-core filter, then each user's items ordered by time (stable: ties keep file order)."""
    raw = len(interactions)
    kept = k_core(interactions, min_count)
    if not kept:
        raise DataError(f"{name}: no interaction is left after keeping users and items with at least {min_count} "
                        f"interactions ({raw} before filtering)")
    item_ids = sorted({i for _, i, _ in kept}, key=lambda s: (len(s), s))
    index = {item: k + 1 for k, item in enumerate(item_ids)}
    per_user: dict[str, list[tuple[int, int]]] = {}
    for pos, (u, i, t) in enumerate(kept):
        per_user.setdefault(u, []).append((t, pos, index[i]))
    users = sorted(per_user, key=lambda s: (len(s), s))
    sequences = [np.array([i for _, _, i in sorted(per_user[u])], dtype=np.int64) for u in users]
    return SequenceData(name, sequences, len(item_ids), np.array([""] + item_ids, dtype=object), raw)


@lru_cache(maxsize=4)
def load_dataset(name: str, min_count: int = 5) -> SequenceData:
    """A registered dataset by name, or a SASRec-format text file by path (any suffix)."""
    if not is_custom(name):
        return build_sequences(REGISTRY[name].parser(fetch(name)), name, min_count)
    path = Path(name).expanduser()
    if not path.is_file():
        raise DataError(f"no such file: {path}. A dataset is one of {', '.join(REGISTRY)}, or the path of a text "
                        "file in the SASRec format ('user item' per line, any suffix)")
    return build_sequences(parse_sasrec_text(path), path.stem, min_count)


def synthetic(num_users: int = 500, num_items: int = 200, mean_len: int = 30, seed: int = 0,
              follow: float = 0.8, zipf: float = 1.1) -> SequenceData:
    """Sequences with planted structure: with probability ``follow`` the next item is the current
    item's fixed successor, else a popular item (Zipf with exponent ``zipf``): a long tail and an
    order a sequential model can learn. Every sequence has at least 5 items."""
    rng = np.random.default_rng(seed)
    successor = rng.permutation(num_items) + 1
    pop = 1.0 / np.arange(1, num_items + 1) ** zipf
    pop /= pop.sum()
    sequences = []
    for _ in range(num_users):
        n = max(5, int(rng.poisson(mean_len)))
        seq = [int(rng.choice(num_items, p=pop)) + 1]
        for _ in range(n - 1):
            seq.append(int(successor[seq[-1] - 1]) if rng.random() < follow else int(rng.choice(num_items, p=pop)) + 1)
        sequences.append(np.array(seq, dtype=np.int64))
    ids = np.array([""] + [str(k) for k in range(1, num_items + 1)], dtype=object)
    return SequenceData(f"synthetic-{num_users}x{num_items}", sequences, num_items, ids)
