"""Texts stage: input checks and instructions, before anything is tokenized.

Stage API (pure Python, no model):

- :func:`check_texts` turns any caller's input into ``list[str]`` or raises TypeError naming
  the bad index (a bare ``str`` is never iterated character by character);
- :func:`check_text` checks one text (a query);
- :func:`repair_text` repairs invalid unicode (lone surrogates): the one repair every path
  (texts, chunks, splitters, late chunking, CLI arguments, server inputs) applies;
- :func:`apply_instruction` puts a text into an instruction (prefix or ``{text}`` template).
"""

from __future__ import annotations

import logging
from typing import Any, Literal

from localembed.errors import InputTypeError

logger = logging.getLogger("localembed")

Kind = Literal["query", "document"]
"""What a text is for: a search ``"query"`` or a ``"document"`` (passage) to be found."""
KINDS: tuple[Kind, ...] = ("document", "query")
"""Every :data:`Kind`, in one spelling."""


def ordered_items(value: Any, what: str, *, single_hint: str = "") -> list[Any]:
    """``value``'s items as a list, when they have an order that output rows can follow.

    A bare str or bytes (whose items would be characters), a mapping or a set (no order),
    None and other non-iterables are a TypeError saying what was expected.

    Example:
        >>> ordered_items({"a": 1}, "str")
        Traceback (most recent call last):
        ...
        localembed.errors.InputTypeError: expected a list of str, got dict, whose items have no position for output row i to match; pass a list

    """  # noqa: E501
    from collections.abc import Mapping

    if isinstance(value, (str, bytes, bytearray)):
        msg = f"expected a list of {what}, got a single {type(value).__name__}{single_hint}"
        raise InputTypeError(msg)
    if isinstance(value, (Mapping, set, frozenset)):
        msg = (
            f"expected a list of {what}, got {type(value).__name__}, whose items have no "
            f"position for output row i to match; pass a list"
        )
        raise InputTypeError(msg)
    try:
        return list(value)
    except TypeError:
        msg = f"expected a list of {what}, got {type(value).__name__}"
        raise InputTypeError(msg) from None


def check_texts(texts: Any) -> list[str]:
    r"""Return ``texts`` as a list of str, or raise TypeError naming the first bad item.

    A bare str or bytes (which would otherwise be embedded character by character), a
    mapping or a set (no input order to match the output rows to), None and other
    non-iterables are a TypeError. Lone surrogates (invalid unicode, e.g. from
    ``errors="surrogateescape"`` or a broken ``\ud83d`` JSON escape), which tokenizers
    cannot encode, are replaced with U+FFFD (a surrogate pair becomes its character) and
    counted in one warning per call.

    Example:
        >>> check_texts(["a", 1])
        Traceback (most recent call last):
        ...
        localembed.errors.InputTypeError: item 1 is int, not str; every text must be a str
        >>> check_texts(["ok", "bad \udc80 byte"])
        ['ok', 'bad \ufffd byte']

    """
    items = ordered_items(texts, "str", single_hint="; wrap it: [text]")
    repaired = 0
    for index, item in enumerate(items):
        if not isinstance(item, str):
            msg = f"item {index} is {type(item).__name__}, not str; every text must be a str"
            raise InputTypeError(msg)
        fixed = repair_text(item)
        if fixed is not item:
            items[index] = fixed
            repaired += 1
    warn_repaired(repaired, len(items))
    return items


def repair_text(text: str) -> str:
    r"""``text`` with invalid unicode repaired: the one repair every input path applies.

    Lone surrogates (from ``errors="surrogateescape"``, a command-line argument that is not
    UTF-8, or a broken ``\ud83d`` JSON escape), which tokenizers cannot encode, become
    U+FFFD; a high+low surrogate pair becomes the character it encodes. Valid text is
    returned as the same object (``repair_text(t) is t``), so callers can count repairs.

    Example:
        >>> repair_text("bad \udc80 byte")
        'bad \ufffd byte'
        >>> repair_text("\ud83d\ude00") == "\N{GRINNING FACE}"
        True

    """
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        # UTF-16 round trip: a pair becomes its character, a lone surrogate U+FFFD.
        return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    return text


def warn_repaired(repaired: int, total: int, what: str = "texts") -> None:
    """Log one warning when ``repaired`` of ``total`` inputs had invalid unicode."""
    if repaired:
        logger.warning(
            "%d of %d %s contained invalid unicode (lone surrogates); "
            "each was replaced with U+FFFD before embedding",
            repaired,
            total,
            what,
        )


def check_text(text: Any, what: str = "query") -> str:
    """Return ``text`` if it is a str, else raise TypeError naming ``what``.

    Invalid unicode in it is repaired later, by :func:`check_texts` (the encoder's entry).
    """
    if not isinstance(text, str):
        msg = f"{what} must be a str, got {type(text).__name__}"
        raise InputTypeError(msg)
    return text


def apply_instruction(instruction: str, text: str) -> str:
    """Put ``text`` into ``instruction``: a template when it has ``{text}``, else a prefix.

    Example:
        >>> apply_instruction("query: ", "cats")
        'query: cats'
        >>> apply_instruction("Q: {text} (short)", "cats")
        'Q: cats (short)'

    """
    if "{text}" in instruction:
        return instruction.replace("{text}", text)
    return instruction + text


def instructed(texts: Any, instruction: str | None) -> list[str]:
    """``texts`` checked (:func:`check_texts`) and put into ``instruction`` (if any).

    Example:
        >>> instructed(["cats"], "query: ")
        ['query: cats']

    """
    items = check_texts(texts)
    if instruction:
        items = [apply_instruction(instruction, text) for text in items]
    return items
