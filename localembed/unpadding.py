"""Forward passes without padding: the Linear layers of an encoder run on real tokens only.

A padded batch of rows of different lengths spends most of its time on padding when the
rows are short and unsorted: a server's pass of 16 single-sentence requests, 6 to 46 tokens
each, is 74% padding in its planned batch (``benchmarks/unpadding.py``). Every operator
of a BERT-style encoder except attention works token by token (the Linear layers, GELU,
LayerNorm, the residual adds), so :func:`unpadded_forward` packs a batch's real tokens into
one row (``[1, tokens]``, with each token's own position and segment ids) and runs the
model on that: those operators see no padding at all. Attention alone needs the rows apart;
the model's attention is registered as :data:`ATTENTION`, which, given the pack's layout,
scatters the packed queries, keys and values back to the padded batch, runs torch's
``scaled_dot_product_attention`` under the batch's padding mask exactly as the ``sdpa``
implementation does, and gathers the real tokens again. Called without a layout (any other
forward pass of the model), it is the ``sdpa`` implementation itself, with ``sdpa``'s mask.

Each real token gets the same products as in the padded batch (the matrix products are row
by row, attention sees the same padded rows and mask), so the hidden states agree to float
rounding; the padded positions of the result are zeros. Only bare encoders whose position
ids this module can reproduce are packed (:func:`can_unpad`: ``BertModel``,
``RobertaModel``, ``XLMRobertaModel`` and their kind with absolute positions, ``sdpa``
attention, on the CPU); others run padded as before. ``LOCALEMBED_UNPAD=0`` in the
environment (read when a model loads) turns it off.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any, NamedTuple

from localembed.hardware import env_switch

if TYPE_CHECKING:
    from collections.abc import Mapping

    import torch
    from transformers import PreTrainedModel

UNPAD = "LOCALEMBED_UNPAD"
"""Environment variable: ``0`` runs every batch padded; ``1`` or unset packs where it can."""

ATTENTION = "localembed_unpadded"
"""The attention implementation a packed model runs (``sdpa``, plus the packed layout)."""

PACKED_MODELS = frozenset({"BertModel", "RobertaModel", "XLMRobertaModel", "CamembertModel"})
"""Bare encoders (first output: per-token hidden states) whose layers are all token-wise but
attention, with absolute position embeddings from the column index or the padding id."""


MIN_TRANSFORMERS = (5, 0)
"""The first transformers release packing runs on: its BERT-family attention is looked up in
``AttentionInterface`` and its masks in ``AttentionMaskInterface`` (tested on 5.23); on an
older one every batch runs padded."""


class Layout(NamedTuple):
    """Where a pack's tokens sit in the padded batch."""

    positions: torch.Tensor
    """Each packed token's flat position (row * width + column) in the padded batch."""
    rows: int
    width: int
    mask: torch.Tensor
    """The batch's attention mask as ``[rows, 1, 1, width]`` booleans (True: attend)."""


def unpad_enabled(environ: Mapping[str, str] | None = None) -> bool:
    """Whether batches are packed without padding (``LOCALEMBED_UNPAD``; default yes).

    Example:
        >>> unpad_enabled({"LOCALEMBED_UNPAD": "0"})
        False

    Raises:
        InputError: the variable is set to something other than 0 or 1.
    """
    return env_switch(UNPAD, environ)


def can_unpad(model: PreTrainedModel) -> bool:
    """Whether :func:`unpadded_forward` reproduces ``model``'s padded forward pass.

    A bare encoder of :data:`PACKED_MODELS`, transformers' own class (not remote code of the
    same name, whose layers may not be token-wise), on the CPU, with ``sdpa`` attention (or
    :data:`ATTENTION` already), absolute position embeddings, not a decoder, under a
    transformers whose BERT-family attention goes through its attention interface
    (:data:`MIN_TRANSFORMERS`).
    """
    config = model.config
    parameter = next(model.parameters(), None)
    return (
        type(model).__name__ in PACKED_MODELS
        and type(model).__module__.startswith("transformers.models.")
        and not getattr(config, "auto_map", None)
        and _transformers_can()
        and (parameter is None or parameter.device.type == "cpu")
        and config._attn_implementation in {"sdpa", ATTENTION}
        and getattr(config, "position_embedding_type", "absolute") in {None, "absolute"}
        and not getattr(config, "is_decoder", False)
        and hasattr(getattr(model, "embeddings", None), "position_embeddings")
    )


def use_unpadded_attention(model: PreTrainedModel) -> None:
    """Switch ``model`` (one that :func:`can_unpad`) to :data:`ATTENTION`, in place.

    Its padded forward passes are unchanged: without a layout the implementation is
    ``sdpa``'s, with ``sdpa``'s mask.
    """
    _register()
    model.config._attn_implementation = ATTENTION


def unpadded_forward(model: PreTrainedModel, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """``model(**inputs)[0]`` with the batch's real tokens packed (padding rows left zero).

    ``inputs``: ``input_ids`` and ``attention_mask`` (``[rows, width]``), optionally
    ``token_type_ids``. The model must have been through :func:`use_unpadded_attention`.
    Call it in ``torch.inference_mode``.
    """
    import torch

    input_ids = inputs["input_ids"]
    attention_mask = inputs["attention_mask"]
    rows, width = input_ids.shape
    attends = attention_mask.ne(0)
    index = attends.reshape(-1).nonzero().squeeze(1)
    if index.numel() == 0:  # nothing attended: no token to run
        hidden = model.config.hidden_size
        return torch.zeros(rows, width, hidden, dtype=model.dtype, device=input_ids.device)
    layout = Layout(index, rows, width, attends[:, None, None, :])

    def packed(tensor: torch.Tensor) -> torch.Tensor:
        return tensor.reshape(-1).index_select(0, index).unsqueeze(0)

    extra = {}
    token_type_ids = inputs.get("token_type_ids")
    if token_type_ids is not None:
        extra["token_type_ids"] = packed(token_type_ids)
    states: torch.Tensor = model(
        input_ids=packed(input_ids),
        position_ids=packed(_position_ids(model, input_ids)),
        localembed_layout=layout,
        **extra,
    )[0]
    full = states.new_zeros(rows * width, states.shape[-1])
    full.index_copy_(0, index, states[0])
    return full.view(rows, width, -1)


def _position_ids(model: PreTrainedModel, input_ids: torch.Tensor) -> torch.Tensor:
    """The position ids the model's embeddings give the padded batch's tokens."""
    import torch

    embeddings: Any = model.embeddings
    from_ids = getattr(embeddings, "create_position_ids_from_input_ids", None)
    if from_ids is not None:  # RoBERTa's kind: counted from the padding id, past padding
        positions: torch.Tensor = from_ids(input_ids, embeddings.padding_idx)
        return positions
    rows, width = input_ids.shape
    return torch.arange(width, device=input_ids.device).expand(rows, width)


@cache
def _transformers_can() -> bool:
    import transformers

    release = transformers.__version__.split(".")
    try:
        return (int(release[0]), int(release[1])) >= MIN_TRANSFORMERS
    except (IndexError, ValueError):
        return False


@cache
def _register() -> None:
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    def attention(
        module: torch.nn.Module,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attention_mask: torch.Tensor | None,
        localembed_layout: Layout | None = None,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, None]:
        if localembed_layout is None:
            output: tuple[torch.Tensor, None] = sdpa_attention_forward(
                module, query, key, value, attention_mask, **kwargs
            )
            return output
        return _padded_attention(query, key, value, localembed_layout, kwargs.get("scaling")), None

    AttentionInterface.register(ATTENTION, attention)
    AttentionMaskInterface.register(ATTENTION, sdpa_mask)


def _padded_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    layout: Layout,
    scaling: float | None,
) -> torch.Tensor:
    """Attention of packed ``[1, heads, tokens, dim]`` states, row by row of the batch.

    Returns ``[1, tokens, heads, dim]``, as transformers' attention implementations do.
    """
    import torch

    heads, dim = query.shape[1], query.shape[3]
    flat = layout.rows * layout.width

    def padded(states: torch.Tensor) -> torch.Tensor:
        batch = states.new_zeros(flat, heads, dim)
        batch.index_copy_(0, layout.positions, states[0].transpose(0, 1))
        return batch.view(layout.rows, layout.width, heads, dim).transpose(1, 2)

    output = torch.nn.functional.scaled_dot_product_attention(
        padded(query), padded(key), padded(value), attn_mask=layout.mask, scale=scaling
    )
    gathered = output.transpose(1, 2).reshape(flat, heads, dim).index_select(0, layout.positions)
    return gathered.unsqueeze(0)
