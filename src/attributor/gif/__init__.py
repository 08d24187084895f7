"""GIF: gradient-informed fingerprints, an ANN index over them, refinement, and the fact-tracing bench.

    texts --fingerprinter--> FeatureStore --index--> candidates --TRAK refiner--> ranking

* :mod:`~attributor.gif.fingerprints`: ``embedding``, ``probe-gradient``, ``gif``
  (and ``model-gradient`` in :mod:`~attributor.gif.model_gradient`), registered by key;
* :mod:`~attributor.gif.corpus`: a user's texts fingerprinted into one folder
  (:func:`fingerprint_corpus`) and text search over it (:class:`Searcher`);
* :mod:`~attributor.gif.store`: fingerprints into a resumable store; exact or ANN search;
* :mod:`~attributor.gif.retriever`: :class:`GifRetriever` and :class:`TrakRefiner`;
* :mod:`~attributor.gif.baselines`, :mod:`~attributor.gif.metrics`, :mod:`~attributor.gif.bench`:
  the fact-tracing benchmark (``attributor gif bench``).
"""

from attributor.gif.corpus import Corpus, Hits, Searcher, fingerprint_corpus
from attributor.gif.fingerprints import (EmbeddingFingerprinter, Fingerprinter, GifFingerprinter,
                                         ProbeGradientFingerprinter, fingerprinter_names, load_fingerprinter,
                                         make_fingerprinter)
from attributor.gif.model_gradient import ModelGradientFingerprinter
from attributor.gif.retriever import GifRetriever, Retrieved, TrakRefiner
from attributor.gif.store import ExactIndex, search_store, write_fingerprints

__all__ = ["Fingerprinter", "EmbeddingFingerprinter", "ProbeGradientFingerprinter", "GifFingerprinter",
           "ModelGradientFingerprinter",
           "make_fingerprinter", "fingerprinter_names", "load_fingerprinter", "fingerprint_corpus", "Corpus", "Searcher",
           "Hits", "GifRetriever", "TrakRefiner", "Retrieved", "ExactIndex",
           "search_store", "write_fingerprints"]
