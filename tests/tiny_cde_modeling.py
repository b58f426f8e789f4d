"""A tiny contextual document embedding (CDE) model: the remote code of the test model.

``tests/cde_factory.py`` copies this file into a model directory as ``modeling_tiny_cde.py``
and points ``config.json``'s ``auto_map`` at it, so transformers loads it only with
``trust_remote_code=True``, as it loads the released ``jxm/cde-small-v1`` / ``v2``.

It follows the released models' interface (written here from their model card, not copied):

- ``model.first_stage_model(input_ids=, attention_mask=)`` -> (batch, dim) "dataset
  embeddings" of corpus documents;
- ``model.second_stage_model(input_ids=, attention_mask=, dataset_embeddings=)`` -> (batch,
  dim) vectors of documents or queries given the corpus (the caller L2-normalizes them);
- ``config.transductive_corpus_size``: how many dataset embeddings the second stage reads
  (more are cut to the first that many, as the released models do);
- the config has no ``hidden_size`` of its own (the backbone's sizes live in ``backbone``).

The second stage prepends the projected dataset embeddings to the word embeddings of the
text, runs a BERT backbone over both, mean-pools the text's positions and adds a residual
projection; vectors therefore depend on the corpus sample (and its order).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import BertConfig, BertModel, PretrainedConfig, PreTrainedModel


class TinyCdeConfig(PretrainedConfig):
    """Sizes of the two stages and the corpus sample size."""

    model_type = "tiny_cde"

    def __init__(
        self,
        backbone: dict[str, Any] | None = None,
        transductive_corpus_size: int = 8,
        max_seq_length: int = 512,
        embedder: str = "",
        **kwargs: Any,
    ) -> None:
        self.backbone = dict(backbone or {})
        self.transductive_corpus_size = transductive_corpus_size
        self.max_seq_length = max_seq_length
        self.embedder = embedder
        super().__init__(**kwargs)


def _mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    weights = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)


def _backbone(config: TinyCdeConfig, extra_positions: int = 0) -> BertModel:
    settings = dict(config.backbone)
    settings["max_position_embeddings"] = (
        int(settings.get("max_position_embeddings", 512)) + extra_positions
    )
    return BertModel(BertConfig(**settings), add_pooling_layer=False)


class FirstStage(nn.Module):
    """Corpus documents -> dataset embeddings (mean pooling and an MLP)."""

    def __init__(self, config: TinyCdeConfig) -> None:
        super().__init__()
        self.embedder = _backbone(config)
        self.hidden_size = int(self.embedder.config.hidden_size)
        self.mlp = nn.Sequential(
            nn.Linear(self.hidden_size, self.hidden_size),
            nn.GELU(),
            nn.Linear(self.hidden_size, self.hidden_size),
        )

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        hidden = self.embedder(input_ids=input_ids, attention_mask=attention_mask)
        return self.mlp(_mean_pool(hidden.last_hidden_state, attention_mask))


class SecondStage(nn.Module):
    """Texts + dataset embeddings -> vectors (the corpus as prefix tokens of the backbone)."""

    def __init__(self, config: TinyCdeConfig) -> None:
        super().__init__()
        self.corpus_size = int(config.transductive_corpus_size)
        self.backbone = _backbone(config, extra_positions=self.corpus_size)
        self.hidden_size = int(self.backbone.config.hidden_size)
        self.prompt_projection = nn.Linear(self.hidden_size, self.hidden_size)
        self.output_projection = nn.Sequential(
            nn.Linear(self.hidden_size, self.hidden_size),
            nn.ReLU(),
            nn.Linear(self.hidden_size, self.hidden_size),
        )

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        dataset_embeddings: torch.Tensor,
        output_hidden_states: bool = False,
    ) -> torch.Tensor:
        corpus = torch.as_tensor(dataset_embeddings)
        if corpus.dim() == 2:
            corpus = corpus.unsqueeze(0)
        corpus = corpus[:, : self.corpus_size].to(
            device=input_ids.device, dtype=self.prompt_projection.weight.dtype
        )
        batch = input_ids.shape[0]
        corpus = self.prompt_projection(corpus.expand(batch, -1, -1))
        words = self.backbone.embeddings.word_embeddings(input_ids)
        corpus_mask = torch.ones(
            (batch, corpus.shape[1]), dtype=attention_mask.dtype, device=attention_mask.device
        )
        hidden = self.backbone(
            inputs_embeds=torch.cat((corpus, words), dim=1),
            attention_mask=torch.cat((corpus_mask, attention_mask), dim=1),
        ).last_hidden_state[:, corpus.shape[1] :]
        pooled = _mean_pool(hidden, attention_mask)
        return self.output_projection(pooled) + pooled


class TinyContextualModel(PreTrainedModel):
    """The two stages under one model, as ``AutoModel`` loads the released ones."""

    config_class = TinyCdeConfig
    base_model_prefix = "cde"

    def __init__(self, config: TinyCdeConfig) -> None:
        super().__init__(config)
        self.first_stage_model = FirstStage(config)
        self.second_stage_model = SecondStage(config)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        dataset_input_ids: torch.Tensor,
        dataset_attention_mask: torch.Tensor,
    ) -> torch.Tensor:
        dataset_embeddings = self.first_stage_model(
            input_ids=dataset_input_ids, attention_mask=dataset_attention_mask
        )
        return self.second_stage_model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            dataset_embeddings=dataset_embeddings,
        )
