"""Contextual document embeddings (CDE): the corpus context, its file, and its checks.

A CDE model (``jxm/cde-small-v1``, ``jxm/cde-small-v2``) embeds in two stages: its first stage
embeds a sample of the corpus (``config.transductive_corpus_size`` documents, 512 for the
released models, with the document prefix) into "dataset embeddings"; its second stage embeds
every document and query given them. :class:`CorpusContext` holds those dataset embeddings
with what made them (the model's fingerprint, the sample's seed and row numbers), so that one
corpus pass serves every later call, process and machine:

- ``encoder.build_context(corpus, size=None, seed=0)`` makes one (see
  :meth:`localembed.LocalEncoder.build_context`);
- :meth:`CorpusContext.save` writes it as safetensors (the array) with JSON metadata in the
  header: no pickle, nothing executed on load; :func:`load_context` reads it back;
- ``get_encoder(model=..., context=ctx_or_path, trust_remote_code=True)`` uses it for every
  document and query; a context made by another model (another fingerprint) is refused with
  both models named.

The sample: ``size`` distinct documents drawn with ``random.Random(seed)`` (the same corpus,
size and seed give the same sample on every machine and Python version), kept in the drawn
order. A corpus smaller than ``size`` is an error unless ``oversample=True`` (the model card's
advice: "You can oversample if your corpus is smaller"): then every document appears
``size // len(corpus)`` times plus a seeded draw of the rest.
"""

from __future__ import annotations

from localembed.corpus_context import (
    CONTEXT_FORMAT,
    ContextError,
    CorpusContext,
    as_context,
    check_context,
    is_contextual,
    load_context,
    model_fingerprint,
    sample_indices,
)

__all__ = [
    "CONTEXT_FORMAT",
    "ContextError",
    "CorpusContext",
    "as_context",
    "check_context",
    "is_contextual",
    "load_context",
    "model_fingerprint",
    "sample_indices",
]
