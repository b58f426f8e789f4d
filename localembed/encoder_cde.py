"""The encoder's contextual document embedding (CDE) methods: the corpus context.

:class:`CDEMethods` is the part of :class:`~localembed.encoder.LocalEncoder` that checks a
given context against the model, and builds one from a corpus with the model's first stage
(see :mod:`localembed.contextual` for the context itself and its file).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from localembed.encoder_base import EncoderBase
from localembed.texts import apply_instruction, check_texts

if TYPE_CHECKING:
    from localembed.backends.contextual import ContextualBackend
    from localembed.corpus_context import CorpusContext

__all__ = ["CDEMethods"]


class CDEMethods(EncoderBase):
    """A CDE model's corpus context: checked when given, built from a corpus."""

    def _context(self, value: Any) -> CorpusContext | None:
        from localembed.corpus_context import ContextError, as_context, check_context

        if not self.contextual:
            if value is not None:
                msg = (
                    f"context= is for contextual document embedding (CDE) models; "
                    f"{self.source.name} is not one (its config has no transductive_corpus_size)"
                )
                raise ContextError(msg)
            return None
        context = as_context(value)
        if context is not None:
            backend = self._contextual_backend()
            check_context(context, backend.fingerprint, self.source.name)
            if context.dimension != backend.dimension or context.size > backend.corpus_size:
                # Only a hand-made context gets here (the fingerprint matched): the model would
                # fail on the width, or silently drop the documents past its corpus size.
                msg = (
                    f"the context holds {context.size} x {context.dimension} dataset embeddings; "
                    f"{self.source.name} takes at most {backend.corpus_size} of width "
                    f"{backend.dimension}: build it with encoder.build_context(corpus)"
                )
                raise ContextError(msg)
        return context

    @property
    def contextual(self) -> bool:
        """Whether the model is a contextual document embedding (CDE) model."""
        from localembed.corpus_context import is_contextual

        return is_contextual(self.model_config)

    @property
    def context_size(self) -> int | None:
        """A CDE model's ``transductive_corpus_size`` (documents in a full context); else None."""
        return self._contextual_backend().corpus_size if self.contextual else None

    def _contextual_backend(self) -> ContextualBackend:
        from localembed.backends.contextual import ContextualBackend
        from localembed.corpus_context import ContextError

        if not isinstance(self.backend, ContextualBackend):
            msg = (
                f"{self.source.name} is not a contextual document embedding (CDE) model: "
                f"build_context needs one (a config with transductive_corpus_size, such as "
                f"jxm/cde-small-v2 with trust_remote_code=True)"
            )
            raise ContextError(msg)
        return self.backend

    def build_context(
        self,
        corpus: Sequence[str],
        size: int | None = None,
        seed: int = 0,
        *,
        oversample: bool = False,
        batch_size: int | None = None,
        show_progress: bool = False,
    ) -> CorpusContext:
        """A CDE model's corpus context: the first stage over a seeded sample of ``corpus``.

        ``size`` documents are drawn with ``random.Random(seed)`` (see
        :func:`localembed.contextual.sample_indices`), embedded with the document instruction
        (the first ``max_length`` tokens each) by the model's ``first_stage_model``, and kept
        with the model's fingerprint. Save it with ``.save(path)``; use it with
        ``get_encoder(..., context=ctx_or_path)`` or :meth:`with_context`.

        Args:
            corpus: the documents (or a representative sample of them).
            size: documents in the sample; None: the model's ``transductive_corpus_size``
                (512 for the released models). At most that many (the model would ignore
                the rest).
            seed: the sampling seed: the same corpus, size and seed give the same context.
            oversample: a corpus smaller than ``size`` repeats documents (else an error).
            batch_size: documents per forward pass; default: the configured one.
            show_progress: show a progress bar.

        Raises:
            ContextError: not a CDE model, ``size`` out of range, or a corpus smaller than
                ``size`` without ``oversample``.
            TypeError: ``corpus`` is not a list of str.
        """
        from localembed.corpus_context import ContextError, sample_indices

        backend = self._contextual_backend()
        documents = check_texts(corpus)
        size = backend.corpus_size if size is None else size
        if isinstance(size, bool) or not isinstance(size, int) or size > backend.corpus_size:
            msg = (
                f"size must be an int from 1 to {self.source.name}'s transductive_corpus_size "
                f"{backend.corpus_size} (the model reads no more), got {size!r}"
            )
            raise ContextError(msg)
        indices = sample_indices(len(documents), size, seed, oversample=oversample)
        return self.context_of(
            [documents[i] for i in indices],
            seed=seed,
            corpus_size=len(documents),
            indices=indices,
            batch_size=batch_size,
            show_progress=show_progress,
        )

    def context_of(
        self,
        sample: Sequence[str],
        *,
        seed: int | None = None,
        corpus_size: int | None = None,
        indices: Sequence[int] = (),
        batch_size: int | None = None,
        show_progress: bool = False,
    ) -> CorpusContext:
        """A CDE context of ``sample`` as given (already drawn; :meth:`build_context` draws).

        For callers that draw the sample themselves (``localembed embed --build-context``
        streams the input): ``seed``, ``corpus_size`` and ``indices`` are recorded as given.
        """
        from localembed.corpus_context import CorpusContext
        from localembed.finish import check_finite

        backend = self._contextual_backend()
        documents = check_texts(sample)
        instruction = self.settings.document_instruction
        items = (
            [apply_instruction(instruction, text) for text in documents]
            if instruction
            else documents
        )
        # Each sampled document is one window (its first max_length tokens), as in the card.
        tokenized = self._windows(items, max_length=self.settings.max_length, long_text="truncate")
        rows = backend.dataset_embeddings(tokenized, self._options(batch_size, show_progress))
        check_finite(rows, str(self.dtype).removeprefix("torch."), "sampled documents")
        return CorpusContext(
            embeddings=rows,
            model=self.source.name,
            fingerprint=backend.fingerprint,
            seed=seed,
            corpus_size=len(documents) if corpus_size is None else corpus_size,
            indices=tuple(indices),
            document_instruction=instruction,
            max_length=self.settings.max_length,
        )
