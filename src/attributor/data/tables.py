"""Read a user's data file into named numpy columns: one :class:`Table` for every format.

Formats (``TABLE_FORMATS``): ``csv`` and ``tsv`` (stdlib :mod:`csv`, header row required),
``jsonl`` (one JSON object per line), ``parquet`` (pyarrow), ``npz`` (numpy, never
unpickled) and ``hf`` (a folder written by ``datasets.Dataset.save_to_disk`` or
``DatasetDict.save_to_disk``). :func:`sniff_format` picks one from the file's suffix or the
folder's contents; an explicit ``format`` overrides it. Either way the file's first bytes
are checked first, so a CSV file read as npz says that it looks like CSV and which format
to set, instead of failing deep inside a parser.

Column types are the same for every format:

- numbers: ``int64`` (all integers), ``float64`` (any fraction, or any missing value),
  ``bool`` (JSON / Parquet / npz booleans without missing values);
- text: a numpy unicode array (dtype kind ``"U"``), never ``object``;
- vectors: a field holding equal-length lists of numbers (JSONL, Parquet, hf), or an npz
  array of shape (n, d, ...), becomes an array of shape (n, d) with the rules above;
- missing values (an empty CSV cell, JSON ``null``, a missing JSONL key, a Parquet null)
  become ``NaN`` in numeric columns (which are then ``float64``) and ``""`` in text ones.
  A column with no value at all is ``float64`` NaN. The caller decides what NaN means.

CSV cells are typed per column: all integers -> int64, all numbers -> float64, otherwise
text (booleans in CSV stay text). ``source["sha256"]`` is the digest of the file's bytes
(of a folder: its files in sorted order, names included), so a run can record exactly
which data it read. Every failure is a :class:`~attributor.errors.DataError` that names the
file and says what to do. Optional readers (pyarrow, datasets) are imported only when used.

Example:
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "toy.csv"
    >>> _ = path.write_text("text,label,score\\nhello,1,0.5\\nworld,0,\\n")
    >>> table = read_table(path)
    >>> table.names, table.column("label").dtype.name, table.column("score")[1]
    (['text', 'label', 'score'], 'int64', np.float64(nan))
"""

from __future__ import annotations

import codecs
import csv
import difflib
import hashlib
import importlib
import io
import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from attributor.errors import DataError, UnknownNameError

__all__ = ["TABLE_FORMATS", "Table", "file_sha256", "read_table", "sniff_format"]

TABLE_FORMATS = ("csv", "tsv", "jsonl", "parquet", "npz", "hf")
_SUFFIXES = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl",
             ".jsonlines": "jsonl", ".parquet": "parquet", ".pq": "parquet", ".npz": "npz"}
_HF_MARKERS = ("dataset_info.json", "dataset_dict.json", "state.json")
_NAMES = {"csv": "CSV text", "tsv": "TSV text", "jsonl": "JSON lines", "parquet": "a Parquet file",
          "npz": "an .npz archive", "hf": "a Hugging Face datasets folder"}
# (first bytes, what they look like, the format to set or None, advice when there is none)
_MAGIC = [(b"PK\x03\x04", "an .npz (zip) archive", "npz", ""),
          (b"PK\x05\x06", "an empty .npz (zip) archive", "npz", ""),
          (b"PAR1", "a Parquet file", "parquet", ""),
          (b"\x93NUMPY", "a single .npy array", None, "save its arrays as columns with np.savez(path, name=array)"),
          (b"ARROW1", "an Arrow file", None, "point data.path at the folder written by save_to_disk (data.format: hf)"),
          (b"\x1f\x8b", "gzip-compressed data", None, "decompress it first (gunzip)"),
          (b"\xff\xfe", "UTF-16 text", None, "save it as UTF-8"),
          (b"\xfe\xff", "UTF-16 text", None, "save it as UTF-8")]
_CONVERT = "convert it to one of: csv, tsv, jsonl, parquet, npz, or a datasets folder (save_to_disk)"


@dataclass(eq=False)  # arrays do not compare to one bool
class Table:
    """Named columns of equal length, read from one data file.

    Attributes:
        columns: name -> array whose first dimension is ``n_rows``: int64, float64, bool,
            unicode text (kind "U"), or a 2-D (n_rows, d) array for vector columns.
        source: the file read: ``path`` (absolute), ``format``, ``sha256``, ``n_rows`` (of
            the file; kept by :meth:`select`) and ``split`` (hf only, else None).
        file_rows: after :meth:`select`, each row's index in the file (0 = the first data
            row), for messages that point at a row; None while the rows are the file's own.
    """

    columns: dict[str, np.ndarray]
    source: dict[str, Any] = field(default_factory=dict)
    file_rows: np.ndarray | None = None

    def __post_init__(self) -> None:
        lengths = {name: len(array) for name, array in self.columns.items()}
        if len(set(lengths.values())) > 1:
            raise DataError(f"columns of {self.source.get('path', 'a table')} differ in length: {lengths}")

    @property
    def n_rows(self) -> int:
        return len(next(iter(self.columns.values()))) if self.columns else 0

    @property
    def names(self) -> list[str]:
        return list(self.columns)

    def column(self, name: str) -> np.ndarray:
        """The column ``name``; a DataError listing the columns there are if it is absent."""
        if name not in self.columns:
            close = difflib.get_close_matches(name, self.names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise DataError(f"column {name!r} is not in {self.source.get('path', 'the table')}; "
                            f"it has: {', '.join(self.names)}{hint}")
        return self.columns[name]

    def select(self, rows: np.ndarray | Sequence[int] | Sequence[bool]) -> Table:
        """A new table of the given rows: int indices in [0, n_rows), or a bool mask of n_rows."""
        rows = np.asarray(rows)
        if rows.dtype == bool:
            if rows.shape != (self.n_rows,):
                raise DataError(f"a row mask needs shape ({self.n_rows},) for this table, got {rows.shape}")
        elif rows.size == 0:
            rows = rows.astype(np.int64)
        elif rows.dtype.kind not in "iu" or rows.ndim != 1:
            raise DataError(f"rows must be a 1-D array of int indices or a bool mask, got dtype {rows.dtype}, "
                            f"shape {rows.shape}")
        elif rows.min() < 0 or rows.max() >= self.n_rows:
            bad = rows[(rows < 0) | (rows >= self.n_rows)][0]
            raise DataError(f"row index {bad} is out of range for a table of {self.n_rows} rows")
        indices = np.flatnonzero(rows) if rows.dtype == bool else rows
        file_rows = indices if self.file_rows is None else self.file_rows[indices]
        return Table({name: array[rows] for name, array in self.columns.items()}, dict(self.source), file_rows)

    def __repr__(self) -> str:
        kinds = ", ".join(f"{name}: {a.dtype}{'' if a.ndim == 1 else ' ' + str(a.shape)}"
                          for name, a in self.columns.items())
        return f"Table({self.source.get('path')!r}, {self.source.get('format')}, n_rows={self.n_rows}, [{kinds}])"


def read_table(path: str | os.PathLike, format: str | None = None, *, split: str | None = None) -> Table:
    """Read ``path`` into a :class:`Table` (see the module docstring for the column types).

    Args:
        path: a data file, or a folder written by ``datasets``' ``save_to_disk``.
        format: one of ``TABLE_FORMATS``; None picks it from the suffix (:func:`sniff_format`).
        split: for a saved ``DatasetDict`` (hf), the split to read; None takes the only one.
    """
    shown = os.fspath(path)
    file = Path(shown).expanduser()
    if format is None:
        fmt = sniff_format(file)
    elif str(format).lower() in TABLE_FORMATS:
        fmt = str(format).lower()
    else:
        raise UnknownNameError("data format", str(format), TABLE_FORMATS)
    _check_exists(file, shown)
    if split is not None and fmt != "hf":
        raise DataError(f"split {split!r} was given for {shown}, but only Hugging Face datasets folders (hf) "
                        f"have splits; remove data.split")
    if fmt == "hf":
        columns, split = _read_hf(file, shown, split)
    else:
        _check_content(file, shown, fmt)
        try:
            columns = _READERS[fmt](file, shown)
        except OSError as err:
            raise DataError(f"cannot read {shown}: {err.strerror or err}") from None
    n_rows = len(next(iter(columns.values()))) if columns else 0
    if n_rows == 0:
        raise DataError(f"{shown} has no {'data rows' if columns else 'columns'}; check data.path")
    return Table(columns, {"path": os.path.abspath(file), "format": fmt, "sha256": file_sha256(file),
                           "n_rows": n_rows, "split": split})


def sniff_format(path: str | os.PathLike) -> str:
    """The format of ``path`` from its suffix, or ``"hf"`` for a ``save_to_disk`` folder."""
    shown = os.fspath(path)
    file = Path(shown).expanduser()
    _check_exists(file, shown)
    if file.is_dir():
        if any((file / marker).is_file() for marker in _HF_MARKERS):
            return "hf"
        raise DataError(f"{shown} is a folder but not a Hugging Face datasets folder (it has no "
                        f"{', '.join(_HF_MARKERS)}); point data.path at a data file or at a folder "
                        f"written by save_to_disk")
    if file.suffix.lower() in _SUFFIXES:
        return _SUFFIXES[file.suffix.lower()]
    looks, guess, advice = _sniff_content(file)
    todo = f"set data.format: {guess}" if guess else advice or f"set data.format (one of {', '.join(TABLE_FORMATS)})"
    raise DataError(f"cannot tell the format of {shown} from its name (it looks like {looks}); {todo}")


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes; of a folder, of its files' relative names, sizes and bytes in sorted order."""
    root = Path(path).expanduser()
    _check_exists(root, os.fspath(path))
    digest = hashlib.sha256()
    if root.is_dir():
        files = sorted((Path(folder, name).relative_to(root).as_posix() for folder, _, names in os.walk(root)
                        for name in names))
        for name in files:
            digest.update(f"{name}\0{(root / name).stat().st_size}\0".encode())
            _feed(digest, root / name)
    else:
        _feed(digest, root)
    return digest.hexdigest()


# -- checks shared by every reader ----------------------------------------------------------


def _check_exists(file: Path, shown: str) -> None:
    if not file.exists():
        raise DataError(f"data file {shown} does not exist; check data.path")


def _feed(digest: Any, file: Path) -> None:
    try:
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except OSError as err:
        raise DataError(f"cannot read {file}: {err.strerror or err}") from None


def _sniff_content(file: Path) -> tuple[str, str | None, str]:
    """What the first bytes of ``file`` look like: (description, format to set or None, advice)."""
    try:
        with open(file, "rb") as handle:
            head = handle.read(8192)
    except OSError as err:
        raise DataError(f"cannot read {file}: {err.strerror or err}") from None
    if not head:
        return "an empty file", None, "check data.path"
    for magic, looks, fmt, advice in _MAGIC:
        if head.startswith(magic):
            return looks, fmt, advice
    if b"\0" in head:
        return "binary data", None, _CONVERT
    text = codecs.getincrementaldecoder("utf-8-sig")(errors="replace").decode(head, final=False)
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    if first.startswith("{"):
        return "JSON lines", "jsonl", ""
    if first.startswith("["):
        return ("one JSON array", None,
                "write one object per line (JSON lines): df.to_json(path, orient='records', lines=True)")
    if "\t" in first and "," in first:
        return "delimited text", None, ""  # csv or tsv: the parser decides
    if "\t" in first:
        return "TSV text", "tsv", ""
    if "," in first:
        return "CSV text", "csv", ""
    return "plain text", None, ""


def _check_content(file: Path, shown: str, fmt: str) -> None:
    if file.is_dir():
        hint = "set data.format: hf" if any((file / m).is_file() for m in _HF_MARKERS) else "point data.path at a file"
        raise DataError(f"{shown} is a folder, not {_NAMES[fmt]}; {hint}")
    looks, guess, advice = _sniff_content(file)
    if looks == "an empty file":
        raise DataError(f"{shown} is empty (0 bytes); check data.path")
    if guess == fmt or (fmt in ("csv", "tsv") and looks in ("plain text", "delimited text")):
        return
    if fmt == "jsonl" and looks == "plain text":  # the reader names the first line that is not an object
        return
    todo = f"set data.format: {guess}" if guess else advice or _CONVERT
    raise DataError(f"{shown} is not {_NAMES[fmt]} (it looks like {looks}); {todo}")


def _lazy_import(module: str, what: str, package: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise DataError(f"reading {what} needs {package}: pip install 'attributor[data]'") from None


def _first_duplicate(names: Sequence[str]) -> str | None:
    seen: set[str] = set()
    return next((name for name in names if name in seen or seen.add(name)), None)


def _first_line(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0]


# -- column typing ---------------------------------------------------------------------------


def _as_numpy_column(name: str, array: np.ndarray, shown: str) -> np.ndarray:
    """An array's dtype mapped onto int64 / float64 / bool / unicode, or a DataError."""
    kind = array.dtype.kind
    if kind in "bU":
        return array
    if kind == "i" or (kind == "u" and (array.size == 0 or array.max() <= np.iinfo(np.int64).max)):
        return array.astype(np.int64, copy=False)
    if kind in "uf":
        return array.astype(np.float64, copy=False)
    if kind == "S":
        try:
            return np.char.decode(array, "utf-8")
        except UnicodeDecodeError:
            raise DataError(f"array {name!r} in {shown} holds bytes that are not UTF-8 text; "
                            f"save it as str (dtype 'U')") from None
    raise DataError(f"column {name!r} of {shown} has dtype {array.dtype}, which attributor does not read; "
                    f"convert it to numbers or text")


def _typed_strings(values: Sequence[str]) -> np.ndarray:
    """CSV cells: all integers -> int64, all numbers -> float64 (blank -> NaN), else text."""
    text = np.array(values, dtype=str)
    blank = np.char.strip(text) == ""
    filled = text[~blank]
    if filled.size == 0:
        return np.full(len(text), np.nan)
    joined = "".join(filled.tolist())
    if "_" not in joined and joined.isascii():  # numpy parses "1_000" and non-ASCII digits as Python does
        for dtype in (np.int64, np.float64):
            try:
                numbers = filled.astype(dtype)
            except (ValueError, OverflowError):
                continue
            if not blank.any():
                return numbers
            out = np.full(len(text), np.nan)
            out[~blank] = numbers
            return out
    return text


def _typed_objects(name: str, values: list, shown: str, where: Callable[[int], str]) -> np.ndarray:
    """Parsed JSON values of one key (None where missing) -> a typed column."""
    kinds = {type(v) for v in values} - {type(None)}
    missing = len(kinds) < len({type(v) for v in values})
    if not kinds:
        return np.full(len(values), np.nan)
    if dict in kinds:
        row = next(i for i, v in enumerate(values) if isinstance(v, dict))
        raise DataError(f"column {name!r} of {shown} holds a nested object at {where(row)}; only flat records "
                        f"are read: move its fields to top-level keys (e.g. '{name}.field')")
    if list in kinds:
        return _typed_lists(name, values, shown, where)
    if kinds == {bool} and not missing:
        return np.array(values, dtype=bool)
    if kinds <= {int, float} or kinds == {bool}:
        if kinds == {int} and not missing:
            try:
                return np.array(values, dtype=np.int64)
            except OverflowError:
                pass
        return np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    return np.array(["" if v is None else v if isinstance(v, str) else json.dumps(v) for v in values], dtype=str)


def _typed_lists(name: str, values: list, shown: str, where: Callable[[int], str]) -> np.ndarray:
    """Equal-length lists of numbers (None: a missing row) -> an (n, d) array."""
    first = next(i for i, v in enumerate(values) if isinstance(v, list))
    width = len(values[first])
    for i, v in enumerate(values):
        if v is not None and not isinstance(v, list):
            raise DataError(f"column {name!r} of {shown} mixes lists and single values ({where(first)} holds a "
                            f"list, {where(i)} holds {repr(v)[:40]}); give every row a list of {width} numbers")
        if v is not None and len(v) != width:
            raise DataError(f"column {name!r} of {shown} holds lists of different lengths: {where(first)} has "
                            f"{width} values, {where(i)} has {len(v)}; a vector column needs one length in every row")
    present = [v for v in values if v is not None]
    try:
        matrix = np.array(present) if width else np.empty((len(present), 0))
        if matrix.dtype == object:  # a null inside a list, or an integer too big for int64
            matrix = matrix.astype(np.float64)
    except (ValueError, TypeError):
        matrix = None
    if matrix is None or matrix.ndim != 2 or matrix.dtype.kind not in "biuf":
        raise DataError(f"column {name!r} of {shown} holds lists that are not flat lists of numbers; only those "
                        f"become vector columns: flatten each row into one list of numbers (join text into one string)")
    return _fill_missing_rows(_as_numpy_column(name, matrix, shown), [v is not None for v in values])


def _fill_missing_rows(matrix: np.ndarray, present: Sequence[bool] | np.ndarray) -> np.ndarray:
    present = np.asarray(present, dtype=bool)
    if present.all():
        return matrix
    out = np.full((len(present),) + matrix.shape[1:], np.nan)
    out[present] = matrix
    return out


def _typed_arrow(name: str, column: Any, shown: str) -> np.ndarray:
    """A pyarrow ChunkedArray -> a typed column (Parquet and hf share this)."""
    pa = importlib.import_module("pyarrow")
    kind = column.type
    if isinstance(kind, pa.ExtensionType):
        column, kind = pa.chunked_array([c.storage for c in column.chunks], kind.storage_type), kind.storage_type
    if pa.types.is_dictionary(kind):
        column, kind = column.cast(kind.value_type), kind.value_type
    if pa.types.is_null(kind):
        return np.full(len(column), np.nan)
    if pa.types.is_boolean(kind) or pa.types.is_integer(kind):
        if column.null_count:
            return column.cast(pa.float64()).to_numpy()
        return _as_numpy_column(name, column.to_numpy(), shown)
    if pa.types.is_floating(kind) or pa.types.is_decimal(kind):
        return column.cast(pa.float64()).to_numpy()
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or str(kind) == "string_view":
        return np.array(column.fill_null("").to_pylist(), dtype=str) if len(column) else np.array([], dtype="<U1")
    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
        return _typed_arrow_lists(name, column, shown)
    if pa.types.is_struct(kind) or pa.types.is_map(kind):
        raise DataError(f"column {name!r} of {shown} holds nested records ({kind}); only flat records are read: "
                        f"move their fields to top-level columns")
    raise DataError(f"column {name!r} of {shown} has type {kind}, which attributor does not read; "
                    f"convert it to numbers, text or lists of numbers")


def _typed_arrow_lists(name: str, column: Any, shown: str) -> np.ndarray:
    pa, pc = importlib.import_module("pyarrow"), importlib.import_module("pyarrow.compute")
    array = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    value_type = array.type.value_type
    if not (pa.types.is_integer(value_type) or pa.types.is_floating(value_type) or pa.types.is_boolean(value_type)
            or pa.types.is_null(value_type)):
        raise DataError(f"column {name!r} of {shown} holds lists of {value_type}; only lists of numbers become "
                        f"vector columns: flatten each row into one list of numbers (join text into one string)")
    present = array.is_valid().to_numpy(zero_copy_only=False)
    lengths = pc.list_value_length(array).fill_null(-1).to_numpy()
    width = int(lengths[present][0]) if present.any() else 0
    bad = np.flatnonzero(present & (lengths != width))
    if bad.size:
        first = int(np.flatnonzero(present)[0])
        raise DataError(f"column {name!r} of {shown} holds lists of different lengths: row {first} has {width} "
                        f"values, row {bad[0]} has {lengths[bad[0]]}; a vector column needs one length in every row")
    values = _typed_arrow(name, pa.chunked_array([array.flatten()]), shown)
    return _fill_missing_rows(values.reshape(int(present.sum()), width), present)


# -- the readers -----------------------------------------------------------------------------


def _decode(data: bytes, shown: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise DataError(f"{shown} is not UTF-8 text: byte 0x{data[err.start]:02x} at offset {err.start} (line "
                        f"{line}) cannot be decoded; save the file as UTF-8") from None


def _read_delimited(file: Path, shown: str, fmt: str) -> dict[str, np.ndarray]:
    delimiter = "," if fmt == "csv" else "\t"
    reader = csv.reader(io.StringIO(_decode(file.read_bytes(), shown), newline=""), delimiter=delimiter)
    header: list[str] | None = None
    rows: list[list[str]] = []
    blank_lines = 0
    try:
        for row in reader:
            if not row:
                blank_lines += 1
                continue
            if header is None:
                header, header_line, blank_lines = [c.strip() for c in row], reader.line_num, 0
                continue
            if len(header) == 1:  # a blank line is an empty cell in a one-column file, except at the end
                rows.extend([[""]] * blank_lines)
            blank_lines = 0
            if len(row) != len(header):
                raise DataError(f"line {reader.line_num} of {shown} has {len(row)} fields but the header (line "
                                f"{header_line}) has {len(header)}; fix that row (quote fields that contain "
                                f"{delimiter!r} or line breaks)")
            rows.append(row)
    except csv.Error as err:
        raise DataError(f"line {reader.line_num} of {shown} is not valid {fmt.upper()}: {err}") from None
    if header is None:
        raise DataError(f"{shown} holds no header row; the first line must name the columns")
    if not rows:
        raise DataError(f"{shown} has a header but no data rows; check data.path")
    header = [name or f"unnamed_{i}" for i, name in enumerate(header)]
    duplicate = _first_duplicate(header)
    if duplicate is not None:
        raise DataError(f"the header of {shown} names column {duplicate!r} twice; give every column its own name")
    return {name: _typed_strings(cells) for name, cells in zip(header, zip(*rows))}


def _read_jsonl(file: Path, shown: str) -> dict[str, np.ndarray]:
    records: list[dict] = []
    lines: list[int] = []
    for number, line in enumerate(_decode(file.read_bytes(), shown).split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            problem = f"{err.msg} (column {err.colno})"
        else:
            if isinstance(record, dict):
                records.append(record)
                lines.append(number)
                continue
            problem = f"it holds a {type(record).__name__}"
        raise DataError(f"line {number} of {shown} is not a JSON object: {problem}; JSON lines needs one object "
                        f"per line, like {{\"text\": \"...\", \"label\": 1}}")
    keys = dict.fromkeys(key for record in records for key in record)
    return {key: _typed_objects(key, [record.get(key) for record in records], shown, lambda i: f"line {lines[i]}")
            for key in keys}


def _read_parquet(file: Path, shown: str) -> dict[str, np.ndarray]:
    pa = _lazy_import("pyarrow", "Parquet", "pyarrow")
    parquet = _lazy_import("pyarrow.parquet", "Parquet", "pyarrow")
    try:
        table = parquet.ParquetFile(str(file)).read()
    except (pa.ArrowException, OSError) as err:
        raise DataError(f"{shown} is not a readable Parquet file: {_first_line(err)}; write it again "
                        f"(e.g. df.to_parquet(path))") from None
    return _arrow_columns(table, shown)


def _arrow_columns(table: Any, shown: str) -> dict[str, np.ndarray]:
    names = table.column_names
    duplicate = _first_duplicate(names)
    if duplicate is not None:
        raise DataError(f"{shown} has two columns named {duplicate!r}; give every column its own name")
    return {name: _typed_arrow(name, table.column(i), shown) for i, name in enumerate(names)}


def _read_npz(file: Path, shown: str) -> dict[str, np.ndarray]:
    columns = {}
    try:
        with np.load(file, allow_pickle=False) as archive:
            for name in archive.files:
                try:
                    array = archive[name]
                except ValueError as err:
                    if "pickle" not in str(err):
                        raise
                    raise DataError(f"array {name!r} in {shown} holds Python objects (dtype object): reading it "
                                    f"would need unpickling, which attributor refuses; save text as str "
                                    f"(np.asarray(x, dtype=str)) and numbers as a numeric dtype") from None
                if not isinstance(array, np.ndarray):
                    raise DataError(f"{shown} holds a member {name!r} that is not a numpy array; write the "
                                    f"archive with np.savez(path, name=array, ...)")
                if array.ndim == 0:
                    raise DataError(f"array {name!r} in {shown} is a single value (0-d); every array is a column "
                                    f"with one entry per row: save it as shape (n,) or move it elsewhere")
                columns[name] = _as_numpy_column(name, array, shown)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise DataError(f"{shown} is not a readable .npz archive: {_first_line(err)}; write it with "
                        f"np.savez(path, name=array, ...)") from None
    lengths = {name: array.shape for name, array in columns.items()}
    if len({shape[0] for shape in lengths.values()}) > 1:
        shapes = ", ".join(f"{name} {shape}" for name, shape in lengths.items())
        raise DataError(f"the arrays in {shown} differ in their first dimension ({shapes}); every array is a "
                        f"column and needs one entry per row")
    return columns


def _read_hf(folder: Path, shown: str, split: str | None) -> tuple[dict[str, np.ndarray], str | None]:
    if not folder.is_dir():
        looks, guess, _ = _sniff_content(folder)
        hint = f"set data.format: {guess}" if guess else "point data.path at the folder written by save_to_disk"
        raise DataError(f"{shown} is a file, but format hf reads a folder written by save_to_disk "
                        f"(it looks like {looks}); {hint}")
    datasets = _lazy_import("datasets", "a Hugging Face datasets folder", "datasets")
    try:
        loaded = datasets.load_from_disk(str(folder))
    except Exception as err:  # noqa: BLE001 - datasets raises many types; the user needs one line
        raise DataError(f"{shown} could not be read as a Hugging Face datasets folder: {_first_line(err)}; "
                        f"check that it was written by save_to_disk") from None
    if isinstance(loaded, datasets.DatasetDict):
        splits = list(loaded)
        if split is None and len(splits) == 1:
            split = splits[0]
        elif split is None:
            raise DataError(f"{shown} holds the splits {', '.join(splits)}; choose one with data.split")
        elif split not in loaded:
            raise DataError(f"split {split!r} is not in {shown}; it has: {', '.join(splits)}; set data.split "
                            f"to one of them")
        loaded = loaded[split]
    elif split is not None:
        raise DataError(f"{shown} holds one dataset without splits, but split {split!r} was asked for; "
                        f"remove data.split")
    try:
        table = loaded.with_format("arrow")[:]
    except Exception as err:  # noqa: BLE001 - as above
        raise DataError(f"the rows of {shown} could not be read: {_first_line(err)}; check that it was written "
                        f"by save_to_disk") from None
    return _arrow_columns(table, shown), split


_READERS: dict[str, Callable[[Path, str], dict[str, np.ndarray]]] = {
    "csv": lambda file, shown: _read_delimited(file, shown, "csv"),
    "tsv": lambda file, shown: _read_delimited(file, shown, "tsv"),
    "jsonl": _read_jsonl,
    "parquet": _read_parquet,
    "npz": _read_npz,
}
