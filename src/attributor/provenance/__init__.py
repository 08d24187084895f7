"""Model provenance: which model is this one derived from?

Fingerprint methods (:mod:`.fingerprints`), similarity metrics (:mod:`.metrics`), a SQL
registry of models and fingerprints (:mod:`.registry`), experiments and their analysis
(:mod:`.experiment`, :mod:`.analysis`, :mod:`.dashboard`), a zoo of tiny related and
unrelated language models (:mod:`.zoo`) and its provenance accuracy (:mod:`.evaluate`).
Importing this package imports none of transformers, SQLAlchemy or plotly.
"""

#: The model types of the provenance vocabulary (model info, registry, zoo, analysis).
#: The last seven are the harder derivations of issue 18 (the ``hard`` zoo presets).
MODEL_TYPES = ("Base", "Chat", "Fine-tuned", "Quantized", "Pruned", "Distilled",
               "LoRA", "Continued", "BlockDrop", "Merge", "Noise", "Int4", "Permuted")

#: The types every family of a zoo gets (the default and tiny presets build exactly these).
ZOO_TYPES = MODEL_TYPES[:6]
