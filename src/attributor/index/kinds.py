"""The index kinds: one registered class per FAISS structure.

Each kind turns ``(n, dim, metric, params)`` into an empty FAISS index, says whether it
must be trained first, and turns the query-time knobs (``nprobe``, ``ef_search``) into
FAISS search parameters. The builder (:mod:`attributor.index.build`) never branches on a
kind's name: it asks the kind.

=========  ==========================================  ===============================  =====================
kind       FAISS structure                             build params (defaults)          search params
=========  ==========================================  ===============================  =====================
flat       IndexFlatIP / IndexFlatL2 (exact)           none                             none
hnsw       IndexHNSWFlat (Malkov & Yashunin 2018)      M=32, ef_construction=100        ef_search=64
ivf-pq     IndexIVFPQ (Jegou et al. 2011)              nlist, m, nbits=8, train_size    nprobe=16
ivf-sq8    IndexIVFScalarQuantizer, QT_8bit            nlist, train_size                nprobe=16
=========  ==========================================  ===============================  =====================

Memory per row, d = dim: flat 4d bytes; hnsw 4d + ~8M (level-0 links) bytes; ivf-pq m
bytes + 8 (id); ivf-sq8 d + 8 bytes. Default ``nlist`` is ``4 sqrt(n)``, at most 4096 and
at least 39 training rows per list; IVF kinds train k-means on ``train_size`` rows
(default ``min(n, 64 nlist)``) sampled with a seeded RNG.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

from attributor.errors import ConfigError
from attributor.registry import Registered

__all__ = ["IndexKind", "index_kinds"]


class IndexKind(Registered, kind="index kind"):
    """One FAISS structure: its build parameters, its search parameters, how to make it."""

    build_params: ClassVar[dict[str, Any]] = {}   # name -> default (None: computed from n, dim)
    search_params: ClassVar[dict[str, Any]] = {}  # name -> default
    needs_training: ClassVar[bool] = False
    mmap: ClassVar[bool] = False                  # faiss.read_index(..., IO_FLAG_MMAP) works

    @classmethod
    def resolve(cls, n: int, dim: int, params: dict[str, Any]) -> dict[str, Any]:
        """All build and search params with defaults filled in; unknown names refused."""
        known = {**cls.build_params, **cls.search_params}
        unknown = sorted(set(params) - set(known))
        if unknown:
            raise ConfigError(f"index kind {cls.key!r} has no parameter {', '.join(map(repr, unknown))}; "
                              f"it takes: {', '.join(sorted(known)) or 'none'}")
        out = {name: params.get(name, default) for name, default in known.items()}
        out = cls._fill(n, dim, out)
        for name, value in out.items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"index parameter {name} must be a positive integer, got {value!r}")
        return out

    @classmethod
    def _fill(cls, n: int, dim: int, params: dict[str, Any]) -> dict[str, Any]:
        return params

    @classmethod
    def make(cls, dim: int, metric: int, params: dict[str, Any]) -> Any:  # -> faiss.Index
        raise NotImplementedError

    @classmethod
    def search_parameters(cls, params: dict[str, Any]) -> Any:
        """FAISS SearchParameters for one search, or None."""
        return None

    @classmethod
    def train_size(cls, n: int, params: dict[str, Any]) -> int:
        return 0


def index_kinds() -> list[str]:
    """Names of the registered index kinds."""
    return IndexKind.names()


class FlatKind(IndexKind, key="flat"):
    """Exact search: every query is compared with every row (O(n d) per query)."""

    mmap = True

    @classmethod
    def make(cls, dim, metric, params):
        import faiss

        return faiss.IndexFlatIP(dim) if metric == faiss.METRIC_INNER_PRODUCT else faiss.IndexFlatL2(dim)


class HNSWKind(IndexKind, key="hnsw"):
    """Hierarchical navigable small-world graph over the full-precision rows."""

    build_params = {"M": 32, "ef_construction": 100}
    search_params = {"ef_search": 64}

    @classmethod
    def make(cls, dim, metric, params):
        import faiss

        index = faiss.IndexHNSWFlat(dim, params["M"], metric)
        index.hnsw.efConstruction = params["ef_construction"]
        index.hnsw.efSearch = params["ef_search"]
        return index

    @classmethod
    def search_parameters(cls, params):
        import faiss

        return faiss.SearchParametersHNSW(efSearch=params["ef_search"])


class _IVFKind(IndexKind):
    needs_training = True
    mmap = True

    @classmethod
    def _fill(cls, n, dim, params):
        if params.get("nlist") is None:
            params["nlist"] = max(1, min(4096, round(4 * math.sqrt(n)), n // 39))
        if params["nlist"] > n:
            raise ConfigError(f"nlist={params['nlist']} is more than the {n} rows to index; use nlist <= {n}")
        if params.get("train_size") is None:
            params["train_size"] = min(n, 64 * params["nlist"])
        params["train_size"] = min(params["train_size"], n)
        if params["train_size"] < params["nlist"]:
            raise ConfigError(f"train_size={params['train_size']} is below nlist={params['nlist']}; k-means needs a row per list")
        return params

    @classmethod
    def train_size(cls, n, params):
        return params["train_size"]

    @classmethod
    def search_parameters(cls, params):
        import faiss

        return faiss.SearchParametersIVF(nprobe=params["nprobe"])

    @staticmethod
    def _quantizer(dim, metric):
        import faiss

        return faiss.IndexFlatIP(dim) if metric == faiss.METRIC_INNER_PRODUCT else faiss.IndexFlatL2(dim)


class IVFPQKind(_IVFKind, key="ivf-pq"):
    """Inverted lists over k-means cells, rows product-quantized to ``m`` codes of ``nbits``."""

    build_params = {"nlist": None, "m": None, "nbits": 8, "train_size": None}
    search_params = {"nprobe": 16}

    @classmethod
    def _fill(cls, n, dim, params):
        params = super()._fill(n, dim, params)
        if params.get("m") is None:  # the largest divisor of dim giving >= 4 dims per subquantizer, at most 64
            params["m"] = max(m for m in range(1, min(64, dim) + 1) if dim % m == 0 and dim // m >= 4 or m == 1)
        if dim % params["m"]:
            raise ConfigError(f"ivf-pq needs m to divide the dimension: m={params['m']}, dim={dim}")
        if params["train_size"] < 2 ** params["nbits"] and params["nbits"] > 0:
            raise ConfigError(f"ivf-pq with nbits={params['nbits']} needs at least {2 ** params['nbits']} training rows; "
                              f"have {params['train_size']} (use a smaller nbits, or another kind for tiny stores)")
        return params

    @classmethod
    def make(cls, dim, metric, params):
        import faiss

        index = faiss.IndexIVFPQ(cls._quantizer(dim, metric), dim, params["nlist"], params["m"], params["nbits"], metric)
        index.nprobe = params["nprobe"]
        return index


class IVFSQ8Kind(_IVFKind, key="ivf-sq8"):
    """Inverted lists over k-means cells, each dimension scalar-quantized to 8 bits."""

    build_params = {"nlist": None, "train_size": None}
    search_params = {"nprobe": 16}

    @classmethod
    def make(cls, dim, metric, params):
        import faiss

        index = faiss.IndexIVFScalarQuantizer(cls._quantizer(dim, metric), dim, params["nlist"],
                                              faiss.ScalarQuantizer.QT_8bit, metric)
        index.nprobe = params["nprobe"]
        return index
