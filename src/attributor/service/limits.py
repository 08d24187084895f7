"""The service's limits: one argument model for the CLI flags, the app factory and ``GET /v1/index``.

Every request is bounded before any work starts: the body size (413), the batch size and
``top_k`` (422), the text length (422), the number of requests in flight (503, so an
overloaded server answers at once instead of queueing without end), and the wall time of
one query (504; the worker thread finishes in the background, its answer is dropped).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from attributor.errors import ConfigError

__all__ = ["ServiceLimits"]


class ServiceLimits(BaseModel):
    """Bounds on each request and on the work in flight (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_body_bytes: int = Field(1 << 20, ge=256, le=1 << 30, description="Largest request body, in bytes (413 above).")
    max_top_k: int = Field(100, ge=1, le=10_000, description="Largest top_k a query may ask for.")
    max_batch: int = Field(64, ge=1, le=10_000, description="Most texts or vectors in one query request.")
    max_text_chars: int = Field(10_000, ge=1, le=1_000_000, description="Longest query text, in characters.")
    timeout_s: float = Field(30.0, gt=0, le=3600, description="Wall-time limit of one query request (504 above).")
    workers: int = Field(4, ge=1, le=256, description="Threads that run queries (text queries share one encoder lock).")
    max_in_flight: int = Field(256, ge=1, le=100_000, description="Requests answered at once; more get 503 at once.")

    @classmethod
    def of(cls, **values: object) -> "ServiceLimits":
        """Build from keyword values (None = the default), turning a bad value into one ConfigError line."""
        try:
            return cls(**{key: value for key, value in values.items() if value is not None})
        except ValidationError as err:
            first = err.errors()[0]
            raise ConfigError(f"service limit {'.'.join(map(str, first['loc']))}: {first['msg']}") from None
