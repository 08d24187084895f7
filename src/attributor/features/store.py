"""FeatureStore: the directory every later stage reads.

Layout::

    STORE/
      manifest.json                      schema version, settings, splits, chunk checksums
      .lock                              held (flock) by the one process writing
      <split>/ckpt<c>/features_<i>.npy   (rows, k) features of chunk i at checkpoint c
      <split>/ckpt<c>/out_to_loss_<i>.npy  (rows,) TRAK's Q of the same rows

Chunk i of a split holds rows ``[i * chunk_size, min((i + 1) * chunk_size, n))``. Every
file is written to a temporary name and renamed into place, and the manifest (rewritten
the same way) is the commit point: a chunk counts as done only once its checksums are in
the manifest. A run killed at any instant therefore leaves a store that resumes to
exactly the features of an uninterrupted run. The per-example done mask follows from the
committed chunks (``done_mask``).

Settings (task, model, checkpoint ids, projector spec, dtype, chunk size, dimensions) are
fixed when the store is created; opening it with different settings is refused.

One writer at a time: every write of the manifest (create, add_split, each chunk's commit,
repair) happens under an exclusive ``flock`` of ``STORE/.lock``, and the manifest is re-read
from disk once the lock is held, so no commit of another process is lost. A second writer
is refused at once with one message (``another process is writing the feature store at
...``). Temporary files carry their writer's pid; the sweep of leftovers (under the lock)
removes only those whose writer is dead.

Damage (a truncated or flipped chunk file, a deleted one) is found by :meth:`FeatureStore.check`
(``attributor store verify``), which reads every committed file in full and lists every
problem. :meth:`FeatureStore.repair` (``attributor store repair``) takes the damaged chunks
out of the manifest, under the write lock and with the same atomic commit as a write, so
that the next featurize recomputes exactly those chunks and nothing else.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from attributor._compare import differences
from attributor._io import atomic_save_npy, atomic_write_json, sha256_file
from attributor.errors import StoreCorruptedError, StoreError, StoreMismatchError

__all__ = ["FeatureStore", "SCHEMA_VERSION", "DTYPES"]

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
DTYPES = ("float16", "float32", "float64")


class FeatureStore:
    """A folder of memory-mappable, checksummed feature chunks. Use :meth:`create` or :meth:`open`."""

    def __init__(self, path: Path, manifest: dict[str, Any]):
        self.path = Path(path)
        self._manifest = manifest
        self._verified: set[str] = set()
        self._lock_handle: Any = None

    # -- the four verbs -------------------------------------------------------------
    @staticmethod
    def exists(path: str | os.PathLike[str]) -> bool:
        return (Path(path) / MANIFEST).is_file()

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> "FeatureStore":
        """Open an existing store for reading (and resuming)."""
        path = Path(path)
        if not cls.exists(path):
            raise StoreError(f"no feature store at {path} (run `attributor featurize` first)")
        try:
            manifest = json.loads((path / MANIFEST).read_text())
        except (OSError, ValueError) as err:  # ValueError: bad JSON or not UTF-8
            raise StoreCorruptedError(f"cannot read {path / MANIFEST}: {err}") from None
        if not isinstance(manifest, dict) or manifest.get("schema_version") != SCHEMA_VERSION:
            found = manifest.get("schema_version") if isinstance(manifest, dict) else None
            raise StoreCorruptedError(
                f"{path / MANIFEST} has schema version {found!r}; this attributor reads version {SCHEMA_VERSION}"
            )
        for key in ("settings", "splits"):
            if not isinstance(manifest.get(key), dict):
                raise StoreCorruptedError(f"{path / MANIFEST} has no {key!r} section")
        damage = _manifest_damage(manifest)
        if damage:
            raise StoreCorruptedError(
                f"{path / MANIFEST} is damaged ({damage}); `attributor store repair` cannot fix that: "
                f"delete {path} and run featurize again"
            )
        return cls(path, manifest)

    def has_work(self) -> bool:
        """Whether any chunk has been committed (a store without is replaced freely: nothing is lost)."""
        return any(chunks for split in self._manifest["splits"].values() for chunks in split.get("chunks", {}).values())

    @classmethod
    def create(cls, path: str | os.PathLike[str], settings: dict[str, Any], *, overwrite: bool = False) -> "FeatureStore":
        """Create a store, or reopen one written with the same settings (to resume or add splits).

        An existing store with other settings is refused unless ``overwrite`` is true, in
        which case it is deleted first, or it holds no committed chunk (a run that failed
        before its first chunk, e.g. on a bad checkpoint): then it is replaced.
        """
        path = Path(path)
        settings = json.loads(json.dumps(settings))  # normalise to what JSON round-trips
        if settings.get("dtype") not in DTYPES:
            raise StoreError(f"store dtype must be one of {DTYPES}, got {settings.get('dtype')!r}")
        if path.exists() and not path.is_dir():
            raise StoreError(f"{path} is a file, not a feature store folder; choose another output directory")
        if cls.exists(path):
            existing = cls.open(path)
            if not differences(existing.settings, settings):
                return existing  # nothing to write: no lock needed
        if not cls.exists(path) and _foreign(path):  # checked before the lock file is put into someone's folder
            raise StoreError(f"{path} exists and is not a feature store; refusing to write into it")
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise StoreError(f"cannot create the feature store folder {path}: {err.strerror}; choose another output directory") from None
        with _locked(path):  # the same checks again, now that no other writer can change the folder
            if cls.exists(path):
                store = cls.open(path)
                diff = [f"{key}: {change}" for key, change in differences(store.settings, settings)]
                if not diff:
                    return store
                if not overwrite and store.has_work():
                    raise StoreMismatchError(
                        f"the feature store at {path} was written with other settings ({'; '.join(diff)}); "
                        "use another output directory or pass --overwrite"
                    )
                for child in path.iterdir():  # everything but the lock file we hold
                    if child.name != ".lock":
                        shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
            elif _foreign(path):
                raise StoreError(f"{path} exists and is not a feature store; refusing to write into it")
            manifest = {
                "schema_version": SCHEMA_VERSION,
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "settings": settings,
                "splits": {},
            }
            atomic_write_json(path / MANIFEST, manifest)
        return cls(path, manifest)

    def save(self) -> None:
        """Commit the manifest (atomic rename), under the write lock (taken here if not held)."""
        if self._lock_handle is not None:
            atomic_write_json(self.path / MANIFEST, self._manifest)
            return
        with _locked(self.path):
            atomic_write_json(self.path / MANIFEST, self._manifest)

    # -- settings ---------------------------------------------------------------------
    @property
    def settings(self) -> dict[str, Any]:
        return self._manifest["settings"]

    @property
    def dim(self) -> int:
        return int(self.settings["dim"])

    @property
    def n_checkpoints(self) -> int:
        return len(self.settings["checkpoints"])

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.settings["dtype"])

    @property
    def chunk_size(self) -> int:
        return int(self.settings["chunk_size"])

    @property
    def splits(self) -> list[str]:
        return sorted(self._manifest["splits"])

    # -- splits and chunks ----------------------------------------------------------
    def add_split(self, name: str, n: int, data_id: str | None = None) -> None:
        """Declare a split of ``n`` examples; refused if it exists with another size or data."""
        if not name or "/" in name or name.startswith("."):
            raise StoreError(f"invalid split name {name!r}")
        if name not in self._manifest["splits"]:
            self._refresh()  # another process may have added it
        if name not in self._manifest["splits"]:
            with contextlib.nullcontext() if self._lock_handle is not None else _locked(self.path):
                if self._lock_handle is None:  # the manifest as committed, read under the lock
                    self._manifest = FeatureStore.open(self.path)._manifest
                splits = self._manifest["splits"]
                if name not in splits:
                    splits[name] = {"n": int(n), "data_id": data_id, "chunks": {str(c): {} for c in range(self.n_checkpoints)}}
                    atomic_write_json(self.path / MANIFEST, self._manifest)
                    return
        old = self._manifest["splits"][name]
        if old["n"] != n or old.get("data_id") != data_id:
            raise StoreMismatchError(
                f"split {name!r} of the store at {self.path} holds other data "
                f"(n={old['n']}, data_id={old.get('data_id')}; now n={n}, data_id={data_id}); "
                "use another output directory or pass --overwrite"
            )

    def split_size(self, split: str) -> int:
        return int(self._split(split)["n"])

    def chunk_bounds(self, split: str) -> list[tuple[int, int, int]]:
        """``(index, start, stop)`` of every chunk of ``split``."""
        n, size = self.split_size(split), self.chunk_size
        return [(i, start, min(start + size, n)) for i, start in enumerate(range(0, n, size))]

    def done_mask(self, split: str, checkpoint: int) -> np.ndarray:
        """Boolean (n,): which examples of ``split`` have committed features at ``checkpoint``."""
        mask = np.zeros(self.split_size(split), dtype=bool)
        done = self._done(split, checkpoint)
        for index, start, stop in self.chunk_bounds(split):
            if str(index) in done:
                mask[start:stop] = True
        return mask

    def missing_chunks(self, split: str, checkpoint: int) -> list[tuple[int, int, int]]:
        done = self._done(split, checkpoint)
        return [bounds for bounds in self.chunk_bounds(split) if str(bounds[0]) not in done]

    def is_complete(self, split: str) -> bool:
        return all(not self.missing_chunks(split, c) for c in range(self.n_checkpoints))

    def require_complete(self, split: str) -> None:
        if not self.is_complete(split):
            self._refresh()  # another FeatureStore object or process may have finished it
        if not self.is_complete(split):
            missing = sum(len(self.missing_chunks(split, c)) for c in range(self.n_checkpoints))
            raise StoreError(
                f"split {split!r} of the store at {self.path} is incomplete ({missing} chunks missing); "
                "run `attributor featurize` again to finish it"
            )

    # -- writing ----------------------------------------------------------------------
    @contextlib.contextmanager
    def writing(self) -> Iterator["FeatureStore"]:
        """Hold the store's write lock; a second writer is refused instead of corrupting it.

        Once the lock is held, the manifest is re-read from disk (another writer may have
        committed chunks since this object was opened) and temporary files left by dead
        writers are removed.
        """
        if self._lock_handle is not None:
            raise _busy(self.path)
        with _locked(self.path) as handle:
            self._manifest = FeatureStore.open(self.path)._manifest
            self._lock_handle = handle
            try:
                for leftover in self.path.rglob(".*.tmp"):
                    if not _writer_alive(leftover):
                        leftover.unlink(missing_ok=True)
                yield self
            finally:
                self._lock_handle = None

    def write_chunk(self, split: str, checkpoint: int, index: int, features: np.ndarray, out_to_loss: np.ndarray) -> None:
        """Write chunk ``index`` of ``split`` at ``checkpoint`` and commit it in the manifest."""
        if self._lock_handle is None:
            raise StoreError("write chunks inside `with store.writing():`")
        _, start, stop = self.chunk_bounds(split)[index]
        if features.shape != (stop - start, self.dim) or out_to_loss.shape != (stop - start,):
            raise StoreError(
                f"chunk {index} of {split!r} needs features of shape {(stop - start, self.dim)} and out_to_loss "
                f"of shape {(stop - start,)}; got {features.shape} and {out_to_loss.shape}"
            )
        folder = self.path / split / f"ckpt{checkpoint:03d}"
        q_dtype = np.float64 if self.dtype == np.float64 else np.float32
        entry = {
            "features": atomic_save_npy(folder / f"features_{index:06d}.npy", features.astype(self.dtype, copy=False)),
            "out_to_loss": atomic_save_npy(folder / f"out_to_loss_{index:06d}.npy", out_to_loss.astype(q_dtype)),
        }
        self._split(split)["chunks"].setdefault(str(checkpoint), {})[str(index)] = entry
        self.save()

    # -- reading ----------------------------------------------------------------------
    def read_chunk(self, split: str, checkpoint: int, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Memory-mapped ``(features, out_to_loss)`` of one committed chunk, checksums verified."""
        entry = self._done(split, checkpoint).get(str(index))
        if entry is None:
            raise StoreError(f"chunk {index} of {split!r} at checkpoint {checkpoint} is not featurized yet")
        if not isinstance(entry, dict) or not all(isinstance(entry.get(n), str) for n in ("features", "out_to_loss")):
            raise StoreCorruptedError(
                f"the manifest entry of chunk {index} of split {split!r} at checkpoint {checkpoint} in {self.path / MANIFEST} "
                f"is malformed; run `attributor store repair {self.path}`, then featurize again")
        folder = self.path / split / f"ckpt{checkpoint:03d}"
        arrays = []
        for name in ("features", "out_to_loss"):
            file = folder / f"{name}_{index:06d}.npy"
            key = str(file)
            if key not in self._verified:
                problem = _file_problem(file, entry[name])
                if problem is not None:
                    raise StoreCorruptedError(
                        f"{file} {problem}; the store is corrupted: run `attributor store repair {self.path}`, then "
                        "featurize again (it recomputes exactly the dropped chunks)"
                    )
                self._verified.add(key)
            arrays.append(np.load(file, mmap_mode="r", allow_pickle=False))
        return arrays[0], arrays[1]

    def iter_chunks(self, split: str, checkpoint: int) -> Iterator[tuple[int, int, np.ndarray, np.ndarray]]:
        """Yield ``(start, stop, features, out_to_loss)`` chunk by chunk (bounded memory)."""
        self.require_complete(split)
        for index, start, stop in self.chunk_bounds(split):
            features, out_to_loss = self.read_chunk(split, checkpoint, index)
            yield start, stop, features, out_to_loss

    def features(self, split: str, checkpoint: int) -> np.ndarray:
        """All features of ``split`` at ``checkpoint``, shape (n, k), loaded into memory."""
        return np.concatenate([np.asarray(f) for _, _, f, _ in self.iter_chunks(split, checkpoint)])

    def out_to_loss(self, split: str, checkpoint: int) -> np.ndarray:
        """Q of ``split`` at ``checkpoint``, shape (n,)."""
        return np.concatenate([np.asarray(q) for _, _, _, q in self.iter_chunks(split, checkpoint)])

    def verify(self) -> None:
        """Check the checksum of every committed chunk; raise StoreCorruptedError on the first bad one.

        :meth:`check` lists every problem instead of stopping at the first.
        """
        for split in self.splits:
            for checkpoint in range(self.n_checkpoints):
                for index in self._done(split, checkpoint):
                    if not index.isdigit():
                        raise StoreCorruptedError(
                            f"{self.path / MANIFEST} lists chunk {index!r} of split {split!r} at checkpoint {checkpoint}, "
                            f"not a chunk index; run `attributor store repair {self.path}`, then featurize again")
                    self.read_chunk(split, checkpoint, int(index))

    # -- checking and repairing -------------------------------------------------------
    def n_committed(self) -> tuple[int, int]:
        """``(committed, total)`` chunks over every split and checkpoint."""
        committed = total = 0
        for split in self.splits:
            for checkpoint in range(self.n_checkpoints):
                n_chunks = len(self.chunk_bounds(split))
                total += n_chunks
                committed += n_chunks - len(self.missing_chunks(split, checkpoint))
        return committed, total

    def check(self) -> list[str]:
        """Every problem of the store, one line each; an empty list means it is intact.

        Reads every committed chunk file in full (sha256) and checks that it exists, matches
        its checksum and holds the shape and dtype the manifest implies ((rows, k) features
        of the store's dtype, (rows,) out_to_loss), and that the manifest's done entries name
        real chunks and checkpoints. Chunks not yet featurized are not problems.
        """
        self._refresh()
        return [problem for _, _, _, problem in self._audit()]

    def repair(self) -> list[str]:
        """Drop every damaged chunk from the manifest (see :meth:`check`); return one line per chunk dropped.

        Runs under the write lock on the manifest as it is on disk, and commits it with one
        atomic rename: the next featurize then recomputes exactly the dropped chunks. The
        damaged files stay until featurize replaces them (nothing listed points to them).
        """
        dropped: list[str] = []
        with self.writing():
            self._manifest = FeatureStore.open(self.path)._manifest  # the committed state, read under the lock
            audit = self._audit()
            for split, checkpoint, index, problem in audit:
                chunks = self._manifest["splits"][split]["chunks"]
                if index is not None:
                    if index in chunks.get(checkpoint, {}):
                        del chunks[checkpoint][index]
                        what = problem.removesuffix(" " + _where(split, checkpoint, index))
                        dropped.append(f"dropped chunk {index} of split {split!r} at checkpoint {checkpoint}: {what}")
                elif checkpoint in chunks:  # an entry for a checkpoint the store does not have
                    dropped.append(f"dropped {len(chunks.pop(checkpoint))} chunks of split {split!r}: {problem}")
                else:  # the entry of a checkpoint is missing: nothing is done there yet
                    chunks[checkpoint] = {}
                    dropped.append(f"added the missing entry of split {split!r} at checkpoint {checkpoint}: {problem}")
            if audit:
                self._verified.clear()
                self.save()
        return dropped

    def _audit(self) -> list[tuple[str, str, str | None, str]]:
        """``(split, checkpoint key, chunk key or None, problem)`` of every problem in the manifest as loaded."""
        found: list[tuple[str, str, str | None, str]] = []
        expected = [str(c) for c in range(self.n_checkpoints)]
        q_dtype = np.dtype(np.float64 if self.dtype == np.float64 else np.float32)
        for split in self.splits:
            chunks = self._manifest["splits"][split]["chunks"]
            bounds = {str(index): (start, stop) for index, start, stop in self.chunk_bounds(split)}
            for checkpoint in expected:
                if checkpoint not in chunks:
                    found.append((split, checkpoint, None,
                                  f"split {split!r} has no entry for checkpoint {checkpoint} in the manifest"))
            for checkpoint in sorted(set(chunks) - set(expected)):
                found.append((split, checkpoint, None, f"split {split!r} lists chunks for checkpoint {checkpoint!r}, "
                                                       f"but the store has {self.n_checkpoints} checkpoints"))
            for checkpoint in expected:
                for index, entry in sorted(chunks.get(checkpoint, {}).items(), key=lambda item: _sort_key(item[0])):
                    where = _where(split, checkpoint, index)
                    if index not in bounds:
                        found.append((split, checkpoint, index, f"the manifest lists chunk {index!r} of split {split!r} at checkpoint "
                                                                f"{checkpoint}, but the split has chunks 0..{len(bounds) - 1}"))
                        continue
                    if not isinstance(entry, dict) or not all(isinstance(entry.get(n), str) for n in ("features", "out_to_loss")):
                        found.append((split, checkpoint, index, f"the manifest entry of chunk {index} of split {split!r} at "
                                                                f"checkpoint {checkpoint} is malformed: {entry!r}"))
                        continue
                    rows = bounds[index][1] - bounds[index][0]
                    folder = self.path / split / f"ckpt{int(checkpoint):03d}"
                    for name, shape, dtype in (("features", (rows, self.dim), self.dtype), ("out_to_loss", (rows,), q_dtype)):
                        file = folder / f"{name}_{int(index):06d}.npy"
                        problem = _file_problem(file, entry[name]) or _array_problem(file, shape, dtype)
                        if problem is not None:
                            found.append((split, checkpoint, index, f"{file} {problem} {where}"))
        return found

    def _refresh(self) -> None:
        """Re-read the manifest from disk, unless this object is the writer (then it is current)."""
        if self._lock_handle is None:
            self._manifest = FeatureStore.open(self.path)._manifest

    def _done(self, split: str, checkpoint: int) -> dict[str, Any]:
        """The committed chunks of ``split`` at ``checkpoint`` (chunk index -> checksums); a missing entry: none."""
        return self._split(split)["chunks"].get(str(checkpoint), {})

    def _split(self, split: str) -> dict[str, Any]:
        if split not in self._manifest["splits"]:
            self._refresh()
        try:
            return self._manifest["splits"][split]
        except KeyError:
            raise StoreError(f"the feature store at {self.path} has no split {split!r} (it has: {', '.join(self.splits) or 'none'})") from None


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[Any]:
    """Hold the exclusive lock of the store at ``path`` (refused at once if another writer holds it)."""
    handle = open(path / ".lock", "w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise _busy(path) from None
    try:
        yield handle
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


def _busy(path: Path) -> StoreError:
    return StoreError(f"another process is writing the feature store at {path}; wait for it to finish or use another --out")


def _foreign(path: Path) -> bool:
    """Whether the folder ``path`` holds anything but a store's lock file (an empty or missing folder: no)."""
    return path.is_dir() and any(child.name != ".lock" for child in path.iterdir())


def _writer_alive(tmp: Path) -> bool:
    """Whether the process that is writing the temporary file ``tmp`` (``.NAME.PID.RANDOM.tmp``) still runs.

    Called under the lock, so a live process other than this one cannot be writing into the
    store; the pid check keeps the sweep safe even so. A name without a pid (an older
    attributor) counts as dead.
    """
    parts = tmp.name[: -len(".tmp")].rsplit(".", 2)
    if len(parts) != 3 or not parts[1].isdigit():
        return False
    pid = int(parts[1])
    if pid == os.getpid():
        return False  # left by an earlier failed write of this process (a write in flight cleans up after itself)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OverflowError:  # not a pid
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _manifest_damage(manifest: dict[str, Any]) -> str | None:
    """What makes a manifest unusable (wrong types where every reader needs them), or None."""
    settings = manifest["settings"]
    checkpoints = settings.get("checkpoints")
    if not isinstance(checkpoints, list) or not checkpoints:
        return f"settings.checkpoints must be a non-empty list, got {checkpoints!r}"
    if settings.get("dtype") not in DTYPES:
        return f"settings.dtype must be one of {DTYPES}, got {settings.get('dtype')!r}"
    for key, least in (("chunk_size", 1), ("dim", 0)):
        value = settings.get(key)
        if not _is_int(value) or value < least:
            return f"settings.{key} must be an integer >= {least}, got {value!r}"
    for name, split in manifest["splits"].items():
        if not isinstance(split, dict):
            return f"split {name!r} must be a mapping, got {type(split).__name__}"
        if not _is_int(split.get("n")) or split["n"] < 0:
            return f"split {name!r} has n = {split.get('n')!r}, not a count"
        chunks = split.get("chunks")
        if not isinstance(chunks, dict) or not all(isinstance(done, dict) for done in chunks.values()):
            return f"the chunks of split {name!r} must map each checkpoint to a mapping of chunks, got {chunks!r:.80}"
    return None


def _where(split: str, checkpoint: str, index: str) -> str:
    return f"(chunk {index} of split {split!r} at checkpoint {checkpoint})"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _sort_key(key: str) -> tuple[int, str]:
    return (int(key), "") if key.isdigit() else (-1, key)


def _file_problem(file: Path, checksum: str) -> str | None:
    """Why ``file`` does not hold what the manifest committed (sha256 ``checksum``), or None."""
    if not file.is_file():
        return "is listed in the manifest but missing"
    if sha256_file(file) != checksum:
        return "does not match its checksum"
    return None


def _array_problem(file: Path, shape: tuple[int, ...], dtype: np.dtype) -> str | None:
    """Why the .npy ``file`` is not a ``shape`` array of ``dtype`` (read from its header), or None."""
    try:
        with open(file, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            if version == (1, 0):
                found_shape, _, found_dtype = np.lib.format.read_array_header_1_0(handle)
            elif version == (2, 0):
                found_shape, _, found_dtype = np.lib.format.read_array_header_2_0(handle)
            else:
                return f"is a .npy file of version {version}, which attributor does not write"
            offset = handle.tell()
    except (OSError, ValueError) as err:
        return f"is not a readable .npy file ({err})"
    if tuple(found_shape) != tuple(shape) or found_dtype != dtype:
        return f"holds a {found_dtype} array of shape {tuple(found_shape)}; the manifest implies {dtype} {tuple(shape)}"
    if file.stat().st_size != offset + int(np.prod(shape)) * dtype.itemsize:
        return f"has {file.stat().st_size} bytes, not the {offset + int(np.prod(shape)) * dtype.itemsize} of its header"
    return None

