"""Weights: a model's transformer loaded from its files, checked, in eval mode.

:func:`load_transformer` is the one place weights are read (safetensors; pickle weights only
on request). Locating the model is :mod:`localembed.loading`; reading its metadata is
:mod:`localembed.st_metadata`, its tokenizer and config :mod:`localembed.transformers_files`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from localembed.forks import ForkSafeLock
from localembed.model_errors import MissingModelFileError, ModelFileError
from localembed.model_origins import display_path, fix_for, origin_of, scrub
from localembed.transformers_files import check_model_files

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel

__all__ = ["load_transformer"]

logger = logging.getLogger("localembed")

# Checkpoint keys a base model may lack without changing the hidden states we pool.
_HARMLESS_MISSING = ("pooler.",)


def weight_files(directory: Path, *, allow_pickle_weights: bool = False) -> list[Path]:
    """The weight files a load of the model in ``directory`` reads.

    Its ``*.safetensors``; else, only with ``allow_pickle_weights``, its ``*.bin`` (pickle:
    loading one can run code).

    Raises:
        MissingModelFileError: no weights it may load (the message says what was found).
    """
    safetensors = sorted(directory.glob("*.safetensors"))
    pickled = sorted(directory.glob("*.bin"))
    if safetensors or (pickled and allow_pickle_weights):
        return safetensors or pickled
    if pickled:
        names = ", ".join(path.name for path in pickled)
        msg = (
            f"no .safetensors weights in {display_path(directory)} (found pickle weights "
            f"{names}, which localembed loads only with allow_pickle_weights=True: loading "
            f"a pickle file can run code, so pass it only for files you trust); or convert "
            f"them once with transformers: save_pretrained(directory, "
            f"safe_serialization=True)"
        )
    else:
        origin = origin_of(directory)
        hint = (
            " (a hub repository with only pickle weights, pytorch_model.bin, needs "
            "allow_pickle_weights=True to fetch and load them)"
            if origin is not None and origin[2] == "hub"
            else ""
        )
        msg = (
            f"no weights in {display_path(directory)}: no .safetensors file{hint}; "
            f"{fix_for(directory)}"
        )
    raise MissingModelFileError(msg)


def load_transformer(
    directory: Path,
    *,
    dtype: torch.dtype,
    device: torch.device,
    trust_remote_code: bool,
    allow_pickle_weights: bool = False,
    attn_implementation: str | None = None,
    auto_class: str = "AutoModel",
) -> PreTrainedModel:
    """Load the transformer's weights, in eval mode, on ``device``.

    ``auto_class`` names the transformers class that builds the model: ``"AutoModel"`` (the
    bare encoder, last hidden states) or e.g. ``"AutoModelForSequenceClassification"`` (a
    cross-encoder with its classification head, whose weights must be in the file).

    Weights come from ``*.safetensors``; pickle-based ``*.bin`` weights are loaded only
    when there are no safetensors and ``allow_pickle_weights`` is True (transformers then
    reads them with ``torch.load(weights_only=True)``).

    Raises:
        MissingModelFileError: no weights, or only pickle weights without the opt-in.
        ModelFileError: a weight file is truncated or corrupt, lacks weights the config
            describes, has tensors of other shapes, or holds NaN/infinite values.
        RemoteCodeError: the model needs its own code and ``trust_remote_code`` is False.

    """
    import torch
    import transformers

    from localembed.faults import is_out_of_memory

    check_model_files(directory, trust_remote_code=trust_remote_code)
    weights = weight_files(directory, allow_pickle_weights=allow_pickle_weights)
    shown = (
        display_path(weights[0])
        if len(weights) == 1
        else f"{display_path(directory)} ({', '.join(path.name for path in weights)})"
    )
    try:
        # transformers builds the model under torch.set_default_dtype(dtype), a process-wide
        # setting: loads run one at a time, so that concurrent loads of different dtypes do
        # not build parts of each other's models, and the default is restored afterwards.
        with _LOAD_LOCK, _quiet_weight_loading(), _default_dtype_kept():
            model, info = getattr(transformers, auto_class).from_pretrained(
                str(directory),
                dtype=dtype,
                use_safetensors=weights[0].suffix == ".safetensors",
                trust_remote_code=trust_remote_code,
                ignore_mismatched_sizes=True,  # reported below, with the shapes, as an error
                output_loading_info=True,
                **({"attn_implementation": attn_implementation} if attn_implementation else {}),
            )
    except Exception as error:
        if is_out_of_memory(error) or isinstance(error, ImportError):
            raise
        msg = (
            f"cannot load the weights {shown}: {type(error).__name__}: {scrub(str(error))}; "
            f"the file is truncated or corrupt; {fix_for(directory)}"
        )
        raise ModelFileError(msg) from error
    mismatched = list(info.get("mismatched_keys") or [])
    missing = [
        key
        for key in sorted(info.get("missing_keys") or [])
        if not any(part in key for part in _HARMLESS_MISSING)
    ]
    if mismatched or missing:
        problems = [f"{len(missing)} missing ({', '.join(missing[:3])})"] if missing else []
        if mismatched:
            shapes = "; ".join(_describe_mismatch(item) for item in mismatched[:3])
            problems.append(f"{len(mismatched)} of another shape ({shapes})")
        msg = (
            f"the weights {shown} do not match {display_path(directory / 'config.json')}: "
            f"{' and '.join(problems)}; those weights would be random and the vectors "
            f"meaningless. The weight file is incomplete or belongs to another model; "
            f"{fix_for(directory)}"
        )
        raise ModelFileError(msg)
    loaded: PreTrainedModel = model.to(device).eval()
    with torch.inference_mode():
        for name, parameter in loaded.named_parameters():
            if not bool(torch.isfinite(parameter).all()):
                msg = (
                    f"the weights {shown} are corrupt: {name} holds NaN or infinite values; "
                    f"{fix_for(directory)}"
                )
                raise ModelFileError(msg)
    return loaded


_LOAD_LOCK = ForkSafeLock()


@contextlib.contextmanager
def _default_dtype_kept() -> Iterator[None]:
    import torch

    before = torch.get_default_dtype()
    try:
        yield
    finally:
        if torch.get_default_dtype() != before:
            torch.set_default_dtype(before)


@contextlib.contextmanager
def _quiet_weight_loading() -> Iterator[None]:
    """Hide transformers' per-tensor "Loading weights" bar and its "LOAD REPORT" table.

    The bar is noise for a local load; the report lists missing and unexpected keys, which
    :func:`load_transformer` checks itself (a harmless missing pooler is not worth a table, a
    real gap is an error naming the file).
    """
    from transformers.utils import logging as transformers_logging

    def keep(record: logging.LogRecord) -> bool:
        return "LOAD REPORT" not in record.getMessage()

    report_logger = logging.getLogger("transformers.modeling_utils")
    report_logger.addFilter(keep)
    enabled = transformers_logging.is_progress_bar_enabled()
    if enabled:
        transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    try:
        yield
    finally:
        report_logger.removeFilter(keep)
        if enabled:
            transformers_logging.enable_progress_bar()  # type: ignore[no-untyped-call]


def _describe_mismatch(item: Any) -> str:
    # transformers reports (key, checkpoint shape, model shape), or just the key.
    if isinstance(item, tuple) and len(item) == 3:
        key, found, expected = item
        return f"{key}: file {list(found)}, config {list(expected)}"
    return str(item)
