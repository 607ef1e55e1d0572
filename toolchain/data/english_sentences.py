"""Real English sentences available offline: the prose of Python's own documentation.

Every CPython ships `pydoc_data/topics.py`, the text `help()` shows for keywords and topics: about
450,000 characters of the Language Reference, written by people for people. Code examples, grammar
rules and tables are dropped; paragraphs are split into sentences, filtered to ordinary prose of
moderate length, de-duplicated, and split into held-apart parts by a hash of each sentence, so the
split does not depend on the order or the version of the source.

>>> corpus = load_english_sentences()
>>> len(corpus.evaluation) >= 500
True
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from toolchain.errors import ToolchainError

MIN_WORDS, MAX_WORDS = 6, 40
# A sentence ends at . ! or ? followed by space and a capital letter; "e.g. X" and "i.e. X" are not ends.
_SENTENCE_END = re.compile(r"(?<!\be\.g)(?<!\bi\.e)(?<=[.!?])\s+(?=[A-Z])")
_MARKUP = re.compile(r"[*`|]|::|\.\.\s|>>>|\[\d+\]|=\s|\w\(|\w_\w")  # code, roles, footnotes, identifiers


@dataclass(frozen=True)
class SentenceSplits:
    """Held-apart sentences: `training` for distillation, `evaluation` for quality (never overlapping)."""

    training: tuple[str, ...]
    evaluation: tuple[str, ...]
    source: str


def _prose_paragraphs(text: str):
    """Paragraphs as single lines; a block with an interactive prompt is code, not prose.

    Indented blocks are kept (method descriptions are indented under their signature); code and
    grammar inside them fail the sentence filter.
    """
    for block in re.split(r"\n\s*\n", text):
        lines = block.splitlines()
        if lines and not any(line.lstrip().startswith((">>>", "...")) for line in lines):
            yield " ".join(line.strip() for line in lines)


def _is_prose(sentence: str) -> bool:
    words = sentence.split()
    if not MIN_WORDS <= len(words) <= MAX_WORDS or not sentence.endswith("."):
        return False
    if _MARKUP.search(sentence) or not sentence[0].isupper():
        return False
    letters = sum(c.isalpha() or c.isspace() for c in sentence)
    return letters >= 0.9 * len(sentence)


def english_sentences() -> list[str]:
    """All distinct prose sentences of the stdlib's documentation topics, in topic order."""
    try:
        from pydoc_data.topics import topics
    except ImportError as exc:  # some distributions strip it
        raise ToolchainError("this Python has no pydoc_data.topics (the stdlib's help texts)") from exc
    seen: dict[str, None] = {}
    for name in sorted(topics):
        for paragraph in _prose_paragraphs(topics[name]):
            for sentence in _SENTENCE_END.split(re.sub(r"\s+", " ", paragraph)):
                sentence = sentence.strip()
                if _is_prose(sentence):
                    seen.setdefault(sentence, None)
    return list(seen)


def _in_evaluation(sentence: str, evaluation_share: float) -> bool:
    digest = int.from_bytes(hashlib.sha256(sentence.encode()).digest()[:8], "big")
    return digest / 2**64 < evaluation_share


def load_english_sentences(evaluation_share: float = 0.5) -> SentenceSplits:
    """The sentences split by hash into training (distillation) and evaluation parts."""
    sentences = english_sentences()
    evaluation = tuple(s for s in sentences if _in_evaluation(s, evaluation_share))
    training = tuple(s for s in sentences if not _in_evaluation(s, evaluation_share))
    return SentenceSplits(training, evaluation, "Python's pydoc_data.topics (Language Reference help texts)")
