"""Request and response bodies of the query service (pydantic; they are the OpenAPI schema).

A query gives exactly one of ``text`` (one string or ``{"prompt", "text"}``), ``texts``
(a batch of them), ``vector`` (one fingerprint, ``dim`` numbers) or ``vectors`` (a batch,
``(q, dim)``), plus ``top_k``. Numbers are strict: ``true`` or ``"1"`` is not a number.
"""

from __future__ import annotations

from typing import Annotated, Optional, Union

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["TextItem", "QueryRequest", "Hit", "QueryResult", "QueryResponse", "ErrorBody", "ReloadRequest",
           "ReloadResponse"]

Number = Annotated[float, Field(strict=True)]


class TextItem(BaseModel):
    """A query with a prompt: fingerprinted as ``prompt + text``, like the corpus rows."""

    model_config = ConfigDict(extra="forbid")
    prompt: str = Field("", description="The prompt (may be empty).")
    text: str = Field(..., description="The completion or statement whose training sources are wanted.")


QueryText = Union[str, TextItem]


class QueryRequest(BaseModel):
    """``POST /v1/query``: one way of giving the queries, how many rows each, which refinement."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"text": "Where was Ann born?", "top_k": 5}]})
    text: Optional[QueryText] = Field(None, description="One text query.")
    texts: Optional[list[QueryText]] = Field(None, description="A batch of text queries.")
    vector: Optional[list[Number]] = Field(None, description="One fingerprint vector of the index's dimension.")
    vectors: Optional[list[list[Number]]] = Field(None, description="A batch of fingerprint vectors, (q, dim).")
    top_k: int = Field(10, strict=True, ge=1, description="Training rows per query (at most the server's max_top_k).")
    refine: Optional[str] = Field(None, description="Refinement of the index's candidates: null or \"none\" "
                                                     "(TRAK refinement is not available from a corpus folder yet).")


class Hit(BaseModel):
    """One ranked training example; where the corpus has them, also ``prompt``, ``label`` and ``meta``."""

    model_config = ConfigDict(extra="allow")
    rank: int = Field(..., description="1 = best.")
    row: int = Field(..., description="Position of the example in the corpus.")
    id: str = Field(..., description="The example's id (GET /v1/examples/{id}).")
    text: str
    score: float = Field(..., description="Final score (larger = more responsible).")
    index_score: float = Field(..., description="The index's inner product of query and example fingerprints.")


class QueryResult(BaseModel):
    """The answer to one query of the request, in request order."""

    query: Optional[QueryText] = Field(None, description="The text query as given (null for a vector).")
    hits: list[Hit]
    latency_ms: dict[str, float] = Field(..., description="Per stage: embed, gradient, search, refine, total (ms).")


class QueryResponse(BaseModel):
    results: list[QueryResult]
    top_k: int
    generation: int = Field(..., description="Which load of the index answered (1, then +1 per reload).")
    server_ms: float = Field(..., description="Wall time of the request in the server, queueing included.")


class ErrorBody(BaseModel):
    """Every 4xx and 5xx answer: one line saying what was wrong and what to do."""

    error: str


class ReloadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: Optional[str] = Field(None, description="A corpus or index folder on the server (default: the one being served).")


class ReloadResponse(BaseModel):
    path: str
    generation: int
    rows: int
    seconds: float = Field(..., description="Time to open the new index (the old one answered meanwhile).")
