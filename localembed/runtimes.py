"""Runtimes: what turns padded token ids into last hidden states.

``torch`` (default) runs the transformers model, optionally with dynamic int8 Linear layers;
``onnx`` exports the model once with ``torch.onnx.export``, fuses it with ONNX Runtime's
transformer optimizer, optionally quantizes it to int8, caches the file, and runs it in an
ONNX Runtime session. Pooling and normalization stay in the heads, shared by all.
:func:`resolve_device` and :func:`resolve_dtype` turn "auto" into what runs here.
"""

from __future__ import annotations

import hashlib
import logging
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from localembed.errors import InputError, RuntimeFault
from localembed.forks import torch_thread_count

if TYPE_CHECKING:
    from collections.abc import Callable

    import torch
    from transformers import PretrainedConfig, PreTrainedModel

    from localembed.config import ModelOptions
    from localembed.hardware import AdaptiveThreads, Threads

logger = logging.getLogger("localembed")

_DTYPES = ("float32", "bfloat16", "float16")

# Architectures ONNX Runtime's transformer optimizer fuses as "bert" (attention, layer norms).
_ORT_BERT_LIKE = frozenset({"bert", "roberta", "xlm-roberta", "camembert", "distilbert"})
ONNX_AUTO_MAX_BYTES = 1 << 30
"""``backend="auto"`` exports models up to this size of weights (ONNX files stop at 2 GB)."""
ONNX_OPSET = 17
EXPORT_TOLERANCE = 1e-3
"""Largest |difference| between ONNX and torch hidden states accepted when a model is exported."""


class ExportMismatchError(RuntimeFault, RuntimeError):
    """The ONNX export of a model does not reproduce its torch outputs."""


def resolve_device(device: str) -> torch.device:
    """Turn "auto" into cuda, then mps, then cpu; check that a named accelerator exists."""
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        msg = f"device {device!r} requested but CUDA is not available; use device='cpu' or 'auto'"
        raise InputError(msg)
    if resolved.type == "mps" and not torch.backends.mps.is_available():
        msg = f"device {device!r} requested but MPS is not available; use device='cpu' or 'auto'"
        raise InputError(msg)
    return resolved


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """Turn "auto" into float32 on CPU/MPS (exact) and float16 on CUDA."""
    import torch

    if dtype == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if dtype not in _DTYPES:
        msg = f"unknown dtype {dtype!r}; valid: auto, {', '.join(_DTYPES)}"
        raise InputError(msg)
    resolved: torch.dtype = getattr(torch, dtype)
    return resolved


class Runtime(Protocol):
    """Runs the transformer: (input_ids, attention_mask) -> its first output.

    That is the last hidden states of a bare model, the logits of a model with a head (a
    cross-encoder, which also takes the ``token_type_ids`` of its two segments).
    """

    def __call__(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Return (rows, width, hidden) last hidden states, or (rows, labels) logits."""
        ...


class TorchRuntime:
    """The transformers model itself, in ``torch.inference_mode``.

    ``name`` is "torch" (``encoder.runtime.name`` says which runtime ``backend="auto"`` chose).

    Loading sets torch's intra-op thread count from ``threads`` (process-wide, see
    :func:`localembed.hardware.apply_threads`) and, where ``LOCALEMBED_LINEAR_KERNEL`` asks
    for it (the CLI and server set "auto": AMD CPUs with AVX-512), runs the fp32 Linear
    layers through oneDNN (:mod:`localembed.onednn`; the model is changed in place).
    """

    name = "torch"

    def __init__(
        self,
        model: PreTrainedModel,
        *,
        threads: Threads = "auto",
        quantization: str | None = None,
        adaptive: AdaptiveThreads | bool | None = None,
    ) -> None:
        """Wrap ``model``; set torch's threads; choose the Linear kernels.

        Args:
            model: the loaded transformers model.
            threads: torch's intra-op threads (see :func:`localembed.hardware.apply_threads`).
            quantization: None, or the int8 scheme the model was quantized with.
            adaptive: lower the threads per batch beside other load
                (:class:`localembed.hardware.AdaptiveThreads`): None follows
                ``LOCALEMBED_ADAPTIVE_THREADS`` (:func:`localembed.hardware.adaptive_threads`;
                only with ``threads="auto"`` on the CPU), False never, True or an
                :class:`~localembed.hardware.AdaptiveThreads` (its readings) always.
        """
        from localembed.hardware import (
            AdaptiveThreads,
            adaptive_threads,
            apply_threads,
            linear_kernel,
        )
        from localembed.onednn import use_onednn_linear
        from localembed.row_split import split_rows_enabled
        from localembed.unpadding import can_unpad, unpad_enabled, use_unpadded_attention

        self.model = model
        self.quantization = quantization
        """None (float weights), or the int8 scheme (:data:`TORCH_INT8_SCHEME`)."""
        self.threads = apply_threads(threads)
        if adaptive is None:
            adaptive = adaptive_threads(threads) and _on_cpu(model)
        self.adaptive: AdaptiveThreads | None = (
            AdaptiveThreads(self.threads) if adaptive is True else adaptive or None
        )
        """Chooses each batch's thread count beside other load; None: ``threads`` always."""
        self.linear_kernel = linear_kernel()
        if self.linear_kernel == "onednn":
            use_onednn_linear(model)
        # int8 splits too: its dynamic activation scale is then per slice, not per batch
        # (STS Benchmark 81.08 split against 81.15 whole, fp32 82.03; docs/performance.md).
        split = self.threads > 1 and _on_cpu(model)
        self.split_workers = self.threads if split and split_rows_enabled() else 0
        """Worker threads a batch's rows are split over (:mod:`localembed.row_split`); 0: none."""
        # int8 runs padded: its activation scale per pass would come from the pack's tokens,
        # which cost 0.05 STS Benchmark points (81.03 packed, 81.08 padded; fp32 82.03).
        self.unpadded = quantization is None and unpad_enabled() and can_unpad(model)
        """Whether padded batches run packed, on their real tokens (:mod:`localembed.unpadding`)."""
        if self.unpadded:
            use_unpadded_attention(model)

    def __call__(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Return the model's first output (last hidden states, or a head's logits)."""
        import torch

        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            inputs["token_type_ids"] = token_type_ids
        if self.split_workers and input_ids.shape[0] > 1:
            from localembed.row_split import split_forward

            return split_forward(self._forward, inputs, self.split_workers, packed=self.unpadded)
        # torch's thread count is per calling thread (OpenMP and MKL keep it per thread):
        # this model's own count, set here in the thread that runs the batch (whichever
        # model or caller set that thread's count last), and restored after it.
        previous = torch.get_num_threads()
        count = self.threads if self.adaptive is None else self.adaptive.next_count()
        count = torch_thread_count(count)
        if count != previous:
            torch.set_num_threads(count)
        try:
            return self._forward(inputs)
        finally:
            if count != previous:
                torch.set_num_threads(previous)

    def _forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        import torch

        with torch.inference_mode():
            if self.unpadded and not bool(inputs["attention_mask"].all()):
                from localembed.unpadding import unpadded_forward

                return unpadded_forward(self.model, inputs)
            output: torch.Tensor = self.model(**inputs)[0]
        return output


def _on_cpu(model: PreTrainedModel) -> bool:
    parameter = next(model.parameters(), None)
    return parameter is None or parameter.device.type == "cpu"


def resolve_backend(
    backend: str,
    path: Path,
    model_config: PretrainedConfig,
    options: ModelOptions,
    device: torch.device,
    dtype: torch.dtype,
) -> str:
    """The runtime a ``backend`` setting runs: "auto" becomes "onnx" or "torch".

    "auto" is "onnx" where ONNX Runtime's fused graph is exact and faster: a BERT-family
    encoder (BERT, RoBERTa, XLM-RoBERTa, CamemBERT, DistilBERT; their attention, skip
    LayerNorm and GELU are fused) in float32 on the CPU, without remote code, with at most
    :data:`ONNX_AUTO_MAX_BYTES` of weights, where ``onnxruntime`` and ``onnx`` are
    installed (extra ``onnx``). Everything else runs on torch. Other values are returned
    as they are.
    """
    if backend != "auto":
        return backend
    reason = _onnx_auto_refusal(path, model_config, options, device, dtype)
    if reason is not None:
        logger.debug("backend='auto' runs torch: %s", reason)
        return "torch"
    return "onnx"


def _onnx_auto_refusal(
    path: Path,
    model_config: PretrainedConfig,
    options: ModelOptions,
    device: torch.device,
    dtype: torch.dtype,
) -> str | None:
    import torch

    weights = [*path.glob("*.safetensors"), *path.glob("*.bin")]
    if device.type != "cpu" or dtype != torch.float32:
        return f"ONNX Runtime runs float32 on the CPU here, not {dtype} on {device.type}"
    if model_config.model_type not in _ORT_BERT_LIKE:
        return f"no verified fused ONNX graph for model type {model_config.model_type!r}"
    if options.trust_remote_code or getattr(model_config, "auto_map", None):
        return "the model runs its own code"
    if not weights or sum(f.stat().st_size for f in weights) > ONNX_AUTO_MAX_BYTES:
        return "the weights are missing or larger than ONNX_AUTO_MAX_BYTES"
    for module in ("onnxruntime", "onnx"):
        try:
            __import__(module)
        except ImportError:
            return f"{module} is not installed (pip install 'localembed[onnx]')"
    if (cache_dir() / "onnx" / _export_folder_name(path) / FAILED_EXPORT).is_file():
        return "its ONNX export failed before (see the marker file in the cache)"
    return None


def check_speed_options(
    options: ModelOptions, backend: str, device: torch.device, dtype: torch.dtype
) -> None:
    """Refuse backend / quantize / dtype combinations that cannot run; warn about slow ones."""
    exact = options.dtype in {"auto", "float32"}
    if backend == "onnx" and (device.type != "cpu" or not exact):
        msg = "backend='onnx' runs float32 (or quantize='int8') on the CPU; use device='cpu'"
        raise InputError(msg)
    if options.quantize == "int8" and device.type != "cpu":
        msg = f"quantize='int8' is a CPU option; on {device.type} use dtype='float16'"
        raise InputError(msg)
    if options.quantize == "int8" and not exact:
        msg = "quantize='int8' quantizes float32 weights; leave dtype='auto' or 'float32'"
        raise InputError(msg)
    precision = str(dtype).removeprefix("torch.")
    if (
        device.type == "cpu"
        and precision != "float32"
        and (precision == "float16" or not cpu_has_native_bfloat16())
    ):
        logger.warning(
            "%s on this CPU has no native support (needs avx512_bf16 or AMX for "
            "bfloat16): expect it to be much slower than float32",
            precision,
        )


def load_runtime(
    path: Path,
    model_config: PretrainedConfig,
    options: ModelOptions,
    *,
    backend: str,
    device: torch.device,
    dtype: torch.dtype,
    auto_class: str = "AutoModel",
    output: str = "last_hidden_state",
) -> tuple[Runtime, PreTrainedModel | None]:
    """The runtime of ``backend`` ("torch" or "onnx") over the checked model in ``path``.

    Args:
        path: the transformer's directory.
        model_config: its configuration.
        options: quantize, threads, trust_remote_code and allow_pickle_weights come from here.
        backend: "torch" or "onnx".
        device: where the torch model runs.
        dtype: the torch model's weights and compute precision.
        auto_class: the transformers class that builds the model (see ``load_transformer``).
        output: the model's first output ("last_hidden_state" or "logits"), for ONNX.

    Returns:
        The runtime, and the torch model (None for ONNX).
    """
    import torch

    from localembed.transformers_files import check_model_files
    from localembed.weights import load_transformer

    def load(**overrides: Any) -> PreTrainedModel:
        settings: dict[str, Any] = {"dtype": dtype, "device": device, **overrides}
        return load_transformer(
            path,
            trust_remote_code=options.trust_remote_code,
            allow_pickle_weights=options.allow_pickle_weights,
            auto_class=auto_class,
            **settings,
        )

    chosen = resolve_backend(backend, path, model_config, options, device, dtype)
    if chosen == "onnx":
        check_model_files(path, trust_remote_code=options.trust_remote_code)
        try:
            runtime = OnnxRuntime(
                path,
                model_config,
                quantize=options.quantize,
                # Eager attention traces into plain ops that keep the padding mask; the sdpa
                # path can bake the example's mask decisions into the graph.
                load_model=lambda: load(
                    dtype=torch.float32, device=torch.device("cpu"), attn_implementation="eager"
                ),
                output=output,
                threads=options.threads,
            )
        except Exception as error:
            if backend != "auto":
                raise
            # "auto" promised the exact path, not ONNX: torch runs it (and the marker keeps
            # later loads from exporting again).
            _mark_failed_export(path, error)
            logger.warning(
                "backend='auto': the ONNX export of %s failed (%s: %s); running it on torch",
                path.name,
                type(error).__name__,
                error,
            )
        else:
            return runtime, None
    model = load()
    if options.quantize != "int8":
        return TorchRuntime(model, threads=options.threads), model
    model = quantize_torch_int8(model)
    return TorchRuntime(model, threads=options.threads, quantization=TORCH_INT8_SCHEME), model


TORCH_INT8_SCHEME = "int8: dynamic, FFN down projections per-channel"
"""How torch int8 quantizes; the embedding cache keys int8 vectors by it (new scheme, new keys)."""


def quantize_torch_int8(model: PreTrainedModel) -> PreTrainedModel:
    """Replace every Linear layer by a dynamically quantized int8 one (CPU only).

    The feed-forward down projections get one weight scale per output channel, the others one
    per tensor: the down projections' weights are where per-tensor int8 rounds badly, and
    per-channel costs them little. Measured on all-MiniLM-L6-v2, STS Benchmark test split
    (fp32: 82.03): every layer per-tensor 80.90; down projections kept float32 81.48;
    down projections per-channel (this) 81.15 in whole batches (81.08 with batches split
    by rows over 2 threads, the default), and about a quarter more documents per
    CPU-second than keeping them float32 (``benchmarks/engines_cpu.py``, AVX2 without VNNI).
    """
    import torch
    from torch.ao.quantization import default_dynamic_qconfig, per_channel_dynamic_qconfig

    qconfigs = {
        name: per_channel_dynamic_qconfig if _is_down_projection(name) else default_dynamic_qconfig
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear)
    }
    with warnings.catch_warnings():
        # torch marks eager dynamic quantization as deprecated; it still works and is the
        # only int8 path that needs no extra package.
        warnings.simplefilter("ignore")
        quantized: PreTrainedModel = torch.ao.quantization.quantize_dynamic(  # type: ignore[no-untyped-call]
            model, qconfigs, dtype=torch.qint8
        )
    return quantized


def _is_down_projection(name: str) -> bool:
    # BERT / XLM-RoBERTa: layer.N.output.dense (not attention.output.dense); Llama/Qwen:
    # mlp.down_proj; DistilBERT: ffn.lin2; MPNet: output.dense as BERT.
    return (name.endswith("output.dense") and "attention" not in name) or name.endswith(
        ("mlp.down_proj", "ffn.lin2")
    )


def cpu_has_native_bfloat16() -> bool:
    """Whether oneDNN can run bfloat16 matrix products natively here (avx512_bf16 or AMX)."""
    import torch

    available = torch.backends.mkldnn.is_available()  # type: ignore[no-untyped-call]
    return bool(available and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def cache_dir() -> Path:
    """Where exported ONNX models are kept: $LOCALEMBED_CACHE, else ~/.cache/localembed."""
    configured = os.environ.get("LOCALEMBED_CACHE")
    if configured:
        return Path(configured).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "localembed"


class OnnxRuntime:
    """An ONNX Runtime session over the exported (and optionally int8) model; ``name`` "onnx"."""

    name = "onnx"

    def __init__(
        self,
        model_dir: Path,
        model_config: PretrainedConfig,
        *,
        quantize: str | None,
        load_model: Callable[[], PreTrainedModel],
        output: str = "last_hidden_state",
        threads: Threads = "auto",
    ) -> None:
        """Export (once, cached) and open the model in ``model_dir``.

        Args:
            model_dir: the transformer's directory.
            model_config: its configuration.
            quantize: None, or "int8" for a dynamically quantized copy of the export.
            load_model: loads the checked float32 model with eager attention (only called
                when no export is cached).
            output: the model's first output: ``"last_hidden_state"`` (a bare model) or
                ``"logits"`` (a cross-encoder, exported with ``token_type_ids`` as well).
            threads: the session's intra-op threads; "auto": torch's count capped at the
                CPUs this process may use (affinity and cgroup quota).
        """
        from localembed.extras import require

        onnxruntime = require("onnxruntime", "backend='onnx'")
        self.output = output
        self.path = self._exported_file(model_dir, model_config, quantize, load_model, output)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = _intra_op_threads(threads)
        options.inter_op_num_threads = 1
        # Spinning worker threads burn the core another thread needs when the machine is
        # busy; blocking costs little per call on small CPUs.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = onnxruntime.InferenceSession(
            str(self.path), options, providers=["CPUExecutionProvider"]
        )
        self.quantization = None if quantize is None else "int8: ONNX Runtime dynamic"

    def __call__(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Return the exported output: last hidden states, or a cross-encoder's logits."""
        import torch

        feed = {"input_ids": input_ids.numpy(), "attention_mask": attention_mask.numpy()}
        if self.output == "logits":
            feed["token_type_ids"] = (
                torch.zeros_like(input_ids) if token_type_ids is None else token_type_ids
            ).numpy()
        (result,) = self.session.run([self.output], feed)
        return torch.from_numpy(result)

    @staticmethod
    def _exported_file(
        model_dir: Path,
        model_config: PretrainedConfig,
        quantize: str | None,
        load_model: Callable[[], PreTrainedModel],
        output: str,
    ) -> Path:
        folder = cache_dir() / "onnx" / _export_folder_name(model_dir, output)
        fused = folder / "model.onnx"
        target = folder / ("model_int8.onnx" if quantize == "int8" else "model.onnx")
        if target.is_file():
            return target
        folder.mkdir(parents=True, exist_ok=True)
        if not fused.is_file():
            logger.info("exporting %s to ONNX (once) in %s", model_dir.name, folder)
            _export(load_model(), model_dir.name, model_config, fused, output)
        if quantize == "int8":
            _quantize_onnx(fused, target)
        return target


FAILED_EXPORT = "export-failed.txt"
"""Written in an export's cache folder when ``backend="auto"`` could not export the model."""


_DIGESTED_UP_TO = 1 << 20
"""Files up to this size (config, tokenizer) key an export by content; larger ones (weights)
by size, mtime, ctime and inode, which a rewrite in place always changes (ctime)."""


def _export_folder_name(model_dir: Path, output: str = "last_hidden_state") -> str:
    """The cache folder of one model's exports.

    Keyed by the model's path, the torch, transformers and ONNX Runtime versions, the exported
    output and every file that the model's fingerprint counts: an edited ``config.json`` (an
    activation, a layer norm epsilon) or rewritten weights get a new export, never the old one.
    """
    import onnxruntime
    import torch
    import transformers

    from localembed.fingerprint import file_digest, files_state

    identity = [
        str(model_dir.resolve()),
        torch.__version__,
        transformers.__version__,
        onnxruntime.__version__,
    ]
    if output != "last_hidden_state":
        identity.append(output)
    for relative, size, mtime, ctime, inode in files_state(model_dir):
        if size <= _DIGESTED_UP_TO:
            identity.append(f"{relative}:sha256:{file_digest(model_dir / relative)}")
        else:
            identity.append(f"{relative}:{size}:{mtime}:{ctime}:{inode}")
    digest = hashlib.sha256("\n".join(identity).encode()).hexdigest()[:16]
    return f"{model_dir.name}-{digest}"


def _mark_failed_export(model_dir: Path, error: Exception) -> None:
    try:
        folder = cache_dir() / "onnx" / _export_folder_name(model_dir)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / FAILED_EXPORT).write_text(f"{type(error).__name__}: {error}\n", encoding="utf-8")
    except (OSError, ImportError):  # a read-only cache: the next load tries again
        pass


def _intra_op_threads(threads: Threads) -> int:
    import torch

    from localembed.hardware import resolve_threads

    return max(1, resolve_threads(threads, torch.get_num_threads()))


def _export(
    model: PreTrainedModel,
    name: str,
    model_config: PretrainedConfig,
    target: Path,
    output: str = "last_hidden_state",
) -> None:
    import numpy as np
    import onnxruntime
    import torch

    class FirstOutput(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
            result: torch.Tensor = self.model(**dict(zip(names, inputs, strict=True)))[0]
            return result

    # A probe with padding in one row, to export and then to verify the exported graph.
    input_ids = torch.tensor([[5, 6, 7, 8, 9, 10], [5, 6, 7, 8, 0, 0]]) % model_config.vocab_size
    attention_mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])
    probe = {"input_ids": input_ids, "attention_mask": attention_mask}
    if output == "logits":  # a cross-encoder: two segments
        probe["token_type_ids"] = torch.tensor([[0, 0, 0, 1, 1, 1], [0, 0, 1, 1, 0, 0]]) % max(
            1, int(getattr(model_config, "type_vocab_size", 1) or 1)
        )
    names = list(probe)
    with torch.inference_mode():
        reference = model(**probe)[0].numpy()
    # Per-process names: two processes may export the same model at once.
    raw = target.with_name(f"raw-{os.getpid()}.onnx")
    axes = {0: "rows", 1: "tokens"}
    dynamic_axes: dict[str, dict[int, str]] = dict.fromkeys(names, axes)
    dynamic_axes[output] = axes if output == "last_hidden_state" else {0: "rows"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            FirstOutput().eval(),
            tuple(probe.values()),
            str(raw),
            input_names=names,
            output_names=[output],
            dynamic_axes=dynamic_axes,
            opset_version=ONNX_OPSET,
            dynamo=False,
        )
    fused = raw
    if model_config.model_type in _ORT_BERT_LIKE:
        from onnxruntime.transformers.optimizer import optimize_model

        optimized = optimize_model(
            str(raw),
            model_type="bert",
            num_heads=model_config.num_attention_heads,
            hidden_size=model_config.hidden_size,
        )
        fused = target.with_name(f"fused-{os.getpid()}.onnx")
        optimized.save_model_to_file(str(fused))
    try:
        session = onnxruntime.InferenceSession(str(fused), providers=["CPUExecutionProvider"])
        (exported,) = session.run(None, {key: value.numpy() for key, value in probe.items()})
        real = attention_mask.numpy().astype(bool) if output == "last_hidden_state" else slice(None)
        difference = float(np.abs(exported[real] - reference[real]).max())
        logger.debug("ONNX export of %s: max |difference| to torch %.2g", name, difference)
        if difference > EXPORT_TOLERANCE:
            msg = (
                f"the ONNX export of {name} differs from torch by {difference:.2g} "
                f"(> {EXPORT_TOLERANCE}); use backend='torch' for this model"
            )
            raise ExportMismatchError(msg)
        fused.replace(target)
    finally:
        raw.unlink(missing_ok=True)
        fused.unlink(missing_ok=True)


def _quantize_onnx(source: Path, target: Path) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # Unsigned per-channel weights: the most accurate dynamic int8 variant measured on
    # all-MiniLM-L6-v2 (min cosine to fp32 0.989 vs 0.929 for the signed per-tensor default).
    partial = target.with_name(f"{target.stem}.partial-{os.getpid()}.onnx")
    options: dict[str, Any] = {"DefaultTensorType": onnx.TensorProto.FLOAT}
    quiet = _DropRecord("pre-processing before quantization")
    logging.getLogger().addFilter(quiet)  # ONNX Runtime advises on the root logger
    try:
        quantize_dynamic(
            str(source),
            str(partial),
            weight_type=QuantType.QUInt8,
            per_channel=True,
            extra_options=options,
        )
    finally:
        logging.getLogger().removeFilter(quiet)
    partial.replace(target)


class _DropRecord(logging.Filter):
    def __init__(self, fragment: str) -> None:
        super().__init__()
        self.fragment = fragment

    def filter(self, record: logging.LogRecord) -> bool:
        return self.fragment not in record.getMessage()
