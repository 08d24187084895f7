"""Model fingerprints: one vector per model from its behaviour or its weights (registered by name).

Each method validates its own arguments (a pydantic model, ``Fingerprinter.Args``); the
resolved arguments, including the sha256 of any word-list file they read, are hashed into
``args_hash`` so that a registry can reuse a fingerprint computed with the same method and
arguments. A fingerprint is a 1-D float64 numpy vector.

| method          | reads                         | invariant to                              | compare with   |
|-----------------|-------------------------------|-------------------------------------------|----------------|
| input_output    | input embeddings + outputs    | nothing needed: spectra of a linear map   | l1             |
| next_token      | outputs only (no weights)     | any reparametrisation of the weights      | jensen_shannon |
| embedding_gram  | input embedding matrix        | any orthogonal map (so any permutation)   | correlation    |
|                 |                               | of the hidden units                       |                |
| weight_invariants | every block's weights, read | permutations of heads, hidden units and   | aligned_blocks |
|                 | by probe-token embeddings     | the residual stream (HuRef terms)         |                |
| hidden_cka      | every layer's hidden states   | any orthogonal map / scale of each layer  | aligned_blocks |
|                 | on probe prompts              | (REEF, linear CKA); any vocabulary        |                |

The last two live in :mod:`.weight_fingerprints` (imported at the end of this module).
"""

from __future__ import annotations

import hashlib
import json
from abc import abstractmethod
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar, Optional

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from attributor.errors import ConfigError, DataError
from attributor.registry import Registered

__all__ = ["Fingerprinter", "get_fingerprinter", "fingerprinter_names", "args_hash", "canonical_args", "read_word_list", "DEFAULT_METRIC"]

#: The metric each method's fingerprints are meant to be compared with.
DEFAULT_METRIC = {"input_output": "l1", "next_token": "jensen_shannon", "embedding_gram": "correlation",
                  "weight_invariants": "aligned_blocks", "hidden_cka": "aligned_blocks"}


def canonical_args(args: Any) -> str:
    """The canonical JSON of a method's arguments (sorted keys, no spaces): what is hashed and stored."""
    from collections.abc import Mapping

    if not isinstance(args, Mapping):
        raise DataError(f"fingerprint arguments must be a dict, got {type(args).__name__}")
    try:
        return json.dumps(dict(args), sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as err:
        raise DataError(f"fingerprint arguments must be JSON (finite numbers, strings, lists, dicts): {err}") from None


def args_hash(args: Any) -> str:
    """sha256 hex of :func:`canonical_args`: equal for equal arguments in any key order."""
    return hashlib.sha256(canonical_args(args).encode()).hexdigest()


def read_word_list(path: Path | None, default: str) -> tuple[list[str], str]:
    """Non-empty stripped lines of ``path`` (or the packaged file ``default``), deduplicated, and their sha256."""
    if path is None:
        text = resources.files("attributor.provenance").joinpath("data").joinpath(default).read_text(encoding="utf-8")
    else:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise DataError(f"cannot read word list {path}: {err}") from None
    words = list(dict.fromkeys(line.strip() for line in text.splitlines() if line.strip()))
    if not words:
        raise DataError(f"word list {path or default} is empty")
    return words, hashlib.sha256("\n".join(words).encode()).hexdigest()


class Fingerprinter(Registered, kind="fingerprint method"):
    """Computes one vector per model; subclasses set ``Args`` and implement :meth:`_fingerprint`."""

    class Args(BaseModel):
        model_config = ConfigDict(extra="forbid")

    summary: ClassVar[str] = ""

    def __init__(self, **args: Any):
        try:
            self.args = self.Args(**args)
        except ValidationError as err:
            known = ", ".join(self.Args.model_fields)
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'args'}: "
                                 + (f"unknown argument (known: {known})" if e["type"] == "extra_forbidden" else e["msg"])
                                 for e in err.errors())
            raise ConfigError(f"fingerprint method {self.key}: {problems}") from None

    @cached_property
    def resolved_args(self) -> dict[str, Any]:
        """The arguments as hashed and stored: defaults filled in, file contents by their sha256."""
        return json.loads(self.args.model_dump_json())

    @property
    def args_hash(self) -> str:
        return args_hash(self.resolved_args)

    def fingerprint(self, loaded) -> np.ndarray:
        """The fingerprint of a :class:`~attributor.provenance.models.LoadedModel`."""
        import torch

        with torch.no_grad():
            vector = np.asarray(self._fingerprint(loaded), dtype=np.float64).ravel()
        if not np.isfinite(vector).all():
            raise DataError(f"{self.key} fingerprint of {loaded.source} is not finite (NaN or inf in the model's outputs or weights)")
        return vector

    @abstractmethod
    def _fingerprint(self, loaded) -> np.ndarray: ...


def fingerprinter_names() -> list[str]:
    return Fingerprinter.names()


def get_fingerprinter(name: str, **args: Any) -> Fingerprinter:
    """The method registered as ``name`` with validated ``args``."""
    return Fingerprinter.lookup(name)(**args)


# --------------------------------------------------------------------------- helpers


def _token_ids(tokenizer, text: str) -> list[int]:
    return list(tokenizer.encode(text, add_special_tokens=False))


def _word_token(tokenizer, word: str) -> int | None:
    """The first token of `` word`` as it appears after a space, skipping a bare-space token.

    Byte-level BPE vocabularies hold a frequent word twice: "the" (start of a text) and " the"
    (inside running text, and what a model predicts after another word); this is the second.
    """
    for token in _token_ids(tokenizer, " " + word):
        if tokenizer.decode([token]).strip():
            return token
    return None


def _last_position_probs(model, sequences: list[list[int]], batch_size: int = 64):
    """Softmax over the vocabulary at each sequence's last token (right padding, masked)."""
    import torch

    rows = []
    for start in range(0, len(sequences), batch_size):
        chunk = sequences[start:start + batch_size]
        length = max(len(s) for s in chunk)
        ids = torch.zeros((len(chunk), length), dtype=torch.long)
        mask = torch.zeros((len(chunk), length), dtype=torch.long)
        for row, seq in enumerate(chunk):
            ids[row, :len(seq)] = torch.tensor(seq)
            mask[row, :len(seq)] = 1
        logits = model(input_ids=ids, attention_mask=mask).logits
        last = logits[torch.arange(len(chunk)), mask.sum(dim=1) - 1]
        rows.append(torch.softmax(last.double(), dim=-1))
    return torch.cat(rows)


def _input_embeddings(model):
    import torch

    layer = model.get_input_embeddings()
    if layer is None or not hasattr(layer, "weight"):
        raise DataError(f"{type(model).__name__} exposes no input embedding matrix")
    return layer.weight.detach().to(torch.float64)


# --------------------------------------------------------------------------- methods


class InputOutput(Fingerprinter, key="input_output"):
    """Spectrum of the best linear map from probe inputs to the model's outputs (VAIL model registry).

    For probe text i with tokens t_1..t_L: input u_i = mean_l (E[t_l] + sin(l - 1)), the sine
    of the position added to every dimension; output v_i = sum_j p_ij E[w_j], with p_ij the
    softmax probability of target token w_j at the last position. With U = [u_i], V = [v_i]
    (d x N), A = V U^+ solves min |A U - V| (Moore-Penrose pseudo-inverse). The fingerprint
    is the n0 largest |eigenvalues| of A, sorted descending and L2-normalised; a model with
    d < n0 has only d eigenvalues and is padded with zeros (the eigenvalues of A embedded in a
    larger space). Cost: one forward over the N probes, a d x d eigendecomposition.

    Tokenisation (``word_boundary``, default true): probes and targets are words as they occur
    in running text: a probe is encoded with a space before it, and each target word
    contributes the first (non-space) token of its spaced form, the one a model predicts to
    start the word. ``word_boundary=False`` encodes each line as is and keeps every token of
    a target (the VAIL code's literal encoding); in a byte-level BPE that turns targets into
    word-start pieces a model rarely predicts after a word. The packaged lists are 421
    common English and documentation words (probes) and their first 200, the most frequent
    (targets). Related-vs-unrelated AUC on the default zoo: 0.995 with these defaults, 0.939
    with the literal encoding and a 50-word target list (benchmarks/RESULTS.md).
    """

    summary = "n0 largest |eigenvalues| of the linear map from probe-token inputs to output embeddings (VAIL)"

    class Args(Fingerprinter.Args):
        n0: int = Field(40, ge=1, le=4096, description="number of eigenvalue magnitudes kept")
        probe_tokens: Optional[Path] = Field(None, description="file of probe texts, one per line (default: packaged list)")
        target_tokens: Optional[Path] = Field(None, description="file of target tokens, one per line (default: packaged list)")
        word_boundary: bool = Field(True, description="tokenise probes and targets as words inside running text "
                                                       "(after a space); false: each line as is (VAIL's literal encoding)")
        batch_size: int = Field(64, ge=1, description="probes per forward pass (does not change the result)")

    @cached_property
    def resolved_args(self) -> dict[str, Any]:
        _, probes_sha = read_word_list(self.args.probe_tokens, "probe_tokens.txt")
        _, targets_sha = read_word_list(self.args.target_tokens, "target_tokens.txt")
        return {"n0": self.args.n0, "word_boundary": self.args.word_boundary,
                "probe_tokens_sha256": probes_sha, "target_tokens_sha256": targets_sha}

    def _fingerprint(self, loaded) -> np.ndarray:
        import torch

        probes, _ = read_word_list(self.args.probe_tokens, "probe_tokens.txt")
        targets, _ = read_word_list(self.args.target_tokens, "target_tokens.txt")
        tokenizer, model = loaded.tokenizer, loaded.model
        embeddings = _input_embeddings(model)
        vocab = embeddings.shape[0]
        if self.args.word_boundary:
            encoded = [_token_ids(tokenizer, " " + p) for p in probes]
            target_ids = list(dict.fromkeys(t for t in (_word_token(tokenizer, w) for w in targets) if t is not None and t < vocab))
        else:
            encoded = [_token_ids(tokenizer, p) for p in probes]
            target_ids = list(dict.fromkeys(t for word in targets for t in _token_ids(tokenizer, word) if t < vocab))
        sequences = [ids for ids in encoded if ids and max(ids) < vocab]
        if len(sequences) < 2 or not target_ids:
            raise DataError(f"input_output: the tokenizer of {loaded.source} gives {len(sequences)} usable probes "
                            f"and {len(target_ids)} target tokens; need at least 2 and 1")
        inputs = torch.stack([(embeddings[ids] + torch.sin(torch.arange(len(ids), dtype=torch.float64))[:, None]).mean(0)
                              for ids in sequences], dim=1)  # (d, N)
        probs = _last_position_probs(model, sequences, self.args.batch_size)[:, target_ids]  # (N, M)
        outputs = embeddings[target_ids].T @ probs.T  # (d, N)
        if not (torch.isfinite(inputs).all() and torch.isfinite(outputs).all()):
            raise DataError(f"{self.key} fingerprint of {loaded.source} is not finite (NaN or inf in the model's embeddings or outputs)")
        linear_map = outputs.numpy() @ np.linalg.pinv(inputs.numpy())
        magnitudes = np.sort(np.abs(np.linalg.eigvals(linear_map)))[::-1][: self.args.n0]
        vector = np.zeros(self.args.n0)
        vector[: magnitudes.size] = magnitudes
        norm = np.linalg.norm(vector)
        return vector / norm if norm > 0 else vector


class NextToken(Fingerprinter, key="next_token"):
    """Next-token distributions over target words after a fixed set of seeded random prompts.

    Prompt k is ``prompt_words`` words drawn (seeded) from the word list and joined by spaces.
    For each prompt, the model's softmax at the last position gives p_k(w) for the first token
    of each target word w (as it appears after a space) and p_k(other) = 1 - sum_w p_k(w); the
    fingerprint concatenates these distributions, each divided by the number of prompts, so
    the whole vector is one distribution over (prompt, outcome) pairs, compared with
    Jensen-Shannon. Uses outputs only: no weights, no embedding matrix, and models with
    different tokenizers are comparable (targets are words, not token ids). Cost: one forward
    over the prompts.
    """

    summary = "next-token distributions over target words after seeded random prompts (outputs only)"

    class Args(Fingerprinter.Args):
        n_prompts: int = Field(64, ge=1, le=100_000, description="number of random prompts")
        prompt_words: int = Field(8, ge=1, le=512, description="words per prompt")
        seed: int = Field(0, description="seed of the prompt sampler")
        words: Optional[Path] = Field(None, description="file of prompt words, one per line (default: packaged probe list)")
        target_tokens: Optional[Path] = Field(None, description="file of target words (default: packaged list)")
        batch_size: int = Field(64, ge=1, description="prompts per forward pass (does not change the result)")

    @cached_property
    def resolved_args(self) -> dict[str, Any]:
        _, words_sha = read_word_list(self.args.words, "probe_tokens.txt")
        _, targets_sha = read_word_list(self.args.target_tokens, "target_tokens.txt")
        return {"n_prompts": self.args.n_prompts, "prompt_words": self.args.prompt_words, "seed": self.args.seed,
                "words_sha256": words_sha, "target_tokens_sha256": targets_sha}

    def prompts(self) -> list[str]:
        words, _ = read_word_list(self.args.words, "probe_tokens.txt")
        rng = np.random.default_rng(self.args.seed)
        return [" ".join(rng.choice(words, size=self.args.prompt_words)) for _ in range(self.args.n_prompts)]

    def _fingerprint(self, loaded) -> np.ndarray:
        targets, _ = read_word_list(self.args.target_tokens, "target_tokens.txt")
        tokenizer, model = loaded.tokenizer, loaded.model
        vocab = model.get_output_embeddings().weight.shape[0] if model.get_output_embeddings() is not None else None
        target_ids = list(dict.fromkeys(t for t in (_word_token(tokenizer, w) for w in targets) if t is not None))
        sequences = [list(tokenizer.encode(p)) for p in self.prompts()]
        if not target_ids or any(not s for s in sequences) or (vocab is not None and max(target_ids) >= vocab):
            raise DataError(f"next_token: the tokenizer of {loaded.source} cannot encode the prompts or target words")
        probs = _last_position_probs(model, sequences, self.args.batch_size)
        on_targets = probs[:, target_ids]
        other = (1.0 - on_targets.sum(dim=1, keepdim=True)).clamp(min=0.0)
        distributions = np.concatenate([on_targets.numpy(), other.numpy()], axis=1)
        return (distributions / len(sequences)).ravel()


class EmbeddingGram(Fingerprinter, key="embedding_gram"):
    """Cosine Gram matrix of the input embeddings of a fixed word list (weights; same vocabulary).

    E holds the embedding rows of the first token of each word (distinct tokens, at most
    ``max_words``); with ``center`` the mean row is subtracted. Rows are L2-normalised and the
    fingerprint is the upper triangle of E E^T. For any orthogonal Q, (E Q)(E Q)^T = E E^T, so
    the fingerprint is unchanged by any permutation of the hidden units (and by any rotation of
    the hidden space), and models of different widths are comparable; it needs models that
    share a vocabulary (a different tokenizer gives a different token list, often a different
    length, which metrics refuse). Cost: k^2 d for k words.
    """

    summary = "cosine Gram matrix of word-token input embeddings (weights; invariant to hidden-unit permutations)"

    class Args(Fingerprinter.Args):
        words: Optional[Path] = Field(None, description="file of words, one per line (default: packaged probe list)")
        max_words: int = Field(256, ge=2, le=20_000, description="at most this many distinct word tokens")
        center: bool = Field(True, description="subtract the mean embedding row before the cosine")

    @cached_property
    def resolved_args(self) -> dict[str, Any]:
        _, words_sha = read_word_list(self.args.words, "probe_tokens.txt")
        return {"max_words": self.args.max_words, "center": self.args.center, "words_sha256": words_sha}

    def _fingerprint(self, loaded) -> np.ndarray:
        words, _ = read_word_list(self.args.words, "probe_tokens.txt")
        embeddings = _input_embeddings(loaded.model)
        ids = list(dict.fromkeys(t for t in (_word_token(loaded.tokenizer, w) for w in words)
                                 if t is not None and t < embeddings.shape[0]))[: self.args.max_words]
        if len(ids) < 2:
            raise DataError(f"embedding_gram: the tokenizer of {loaded.source} gives {len(ids)} word tokens; need 2")
        rows = embeddings[ids].numpy()
        if self.args.center:
            rows = rows - rows.mean(axis=0, keepdims=True)
        norms = np.linalg.norm(rows, axis=1, keepdims=True)
        rows = rows / np.where(norms > 0, norms, 1.0)
        gram = rows @ rows.T
        return gram[np.triu_indices(len(ids), k=1)]


from attributor.provenance import weight_fingerprints as _weight_fingerprints  # noqa: E402,F401  (registers two methods)
