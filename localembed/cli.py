"""The ``localembed`` command: ``info`` and ``embed``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from localembed.config import EncoderConfig

EXAMPLES = {
    "info": "examples:\n  localembed info\n  localembed info BAAI/bge-small-en-v1.5 --json",
    "embed": (
        "examples:\n"
        "  localembed embed docs.txt -o docs.npy\n"
        "  localembed embed queries.txt -o queries.jsonl --kind query\n"
        "  cat docs.txt | localembed embed - -o docs.npy --model ./my-model --pooling mean"
    ),
}


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pooling", default="auto", help="pooling mode (default: auto)")
    parser.add_argument("--max-length", type=int, default=None, help="tokens kept per text")
    parser.add_argument("--batch-size", type=int, default=32, help="texts per forward pass")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    parser.add_argument(
        "--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"]
    )
    parser.add_argument("--query-instruction", default=None, help='query prefix ("" for none)')
    parser.add_argument(
        "--document-instruction", default=None, help='document prefix ("" for none)'
    )
    parser.add_argument("--no-normalize", action="store_true", help="skip L2 normalization")
    parser.add_argument(
        "--trust-remote-code", action="store_true", help="run the model repository's code"
    )
    parser.add_argument(
        "--allow-pickle-weights", action="store_true", help="load .bin/.pt weights you trust"
    )


def _config(args: argparse.Namespace, model: str | None) -> EncoderConfig:
    options = {
        "model": model,
        "pooling": args.pooling,
        "max_length": args.max_length,
        "batch_size": args.batch_size,
        "device": args.device,
        "dtype": args.dtype,
        "query_instruction": args.query_instruction,
        "document_instruction": args.document_instruction,
        "trust_remote_code": args.trust_remote_code,
        "allow_pickle_weights": args.allow_pickle_weights,
    }
    if args.no_normalize:
        options["normalize"] = False
    return EncoderConfig(**options)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``localembed`` command."""
    parser = argparse.ArgumentParser(
        prog="localembed", description="Local text embeddings (offline-first)."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    info = commands.add_parser(
        "info",
        help="show how a model will embed",
        epilog=EXAMPLES["info"],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    info.add_argument(
        "model", nargs="?", default=None, help="directory or hub id (default: embedded)"
    )
    info.add_argument("--json", action="store_true", help="print JSON")
    _add_model_options(info)

    embed = commands.add_parser(
        "embed",
        help="embed text lines into .npy or .jsonl",
        epilog=EXAMPLES["embed"],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    embed.add_argument("input", help="text file, one text per line ('-' for standard input)")
    embed.add_argument("-o", "--output", required=True, help="output file: .npy or .jsonl")
    embed.add_argument("--model", default=None, help="directory or hub id (default: embedded)")
    embed.add_argument(
        "--kind", choices=["document", "query"], default="document", help="which instruction"
    )
    _add_model_options(embed)
    return parser


def _info(args: argparse.Namespace) -> int:
    description = _config(args, args.model).load_encoder().describe()
    if args.json:
        print(json.dumps(description, ensure_ascii=False, indent=2))
        return 0
    sources = description.pop("sources")
    for key, value in description.items():
        origin = f"  ({sources[key]})" if key in sources else ""
        print(
            f"{key:>20}: {value!r}{origin}"
            if isinstance(value, str)
            else f"{key:>20}: {value}{origin}"
        )
    return 0


def _read_lines(source: str) -> list[str]:
    if source == "-":
        return sys.stdin.read().splitlines()
    return Path(source).read_text(encoding="utf-8").splitlines()


def _write(vectors: Any, texts: list[str], output: Path) -> None:
    import numpy as np

    # Write beside the target, then rename: an interrupted run leaves no half-written file.
    partial = output.with_name(output.name + ".partial")
    try:
        if output.suffix == ".npy":
            with partial.open("wb") as file:
                np.save(file, vectors)
        else:
            with partial.open("w", encoding="utf-8") as file:
                for text, vector in zip(texts, vectors.tolist(), strict=True):
                    file.write(json.dumps({"text": text, "embedding": vector}, ensure_ascii=False))
                    file.write("\n")
        partial.replace(output)
    finally:
        partial.unlink(missing_ok=True)


def _embed(args: argparse.Namespace) -> int:
    output = Path(args.output)
    if output.suffix not in {".npy", ".jsonl"}:
        print(f"localembed: output must end in .npy or .jsonl, got {output.name}", file=sys.stderr)
        return 2
    texts = _read_lines(args.input)
    encoder = _config(args, args.model).load_encoder()
    encode = encoder.encode_queries if args.kind == "query" else encoder.encode_documents
    vectors = encode(texts, show_progress=sys.stderr.isatty())
    _write(vectors, texts, output)
    print(
        f"wrote {len(texts)} vectors of dimension {encoder.dimension} to {output}", file=sys.stderr
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the ``localembed`` command; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return _info(args) if args.command == "info" else _embed(args)
    except (ValueError, TypeError, OSError, MemoryError) as error:
        print(f"localembed: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        # The output is written to OUTPUT.partial and renamed only when complete, and the
        # partial file is removed on the way out: nothing half-written is left behind.
        print("localembed: interrupted; no output was written", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
