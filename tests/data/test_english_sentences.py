"""The offline English corpus: enough distinct sentences, the same every time, held-apart splits."""

from __future__ import annotations

from toolchain.data.english_sentences import MAX_WORDS, MIN_WORDS, english_sentences, load_english_sentences


def test_at_least_500_distinct_evaluation_sentences_deterministically():
    first, second = load_english_sentences(), load_english_sentences()
    assert first == second
    assert len(set(first.evaluation)) == len(first.evaluation) >= 500
    assert len(first.training) >= 300


def test_training_and_evaluation_never_overlap_and_cover_the_corpus():
    corpus = load_english_sentences()
    assert not set(corpus.training) & set(corpus.evaluation)
    assert set(corpus.training) | set(corpus.evaluation) == set(english_sentences())


def test_sentences_are_prose_of_moderate_length():
    for sentence in english_sentences():
        assert MIN_WORDS <= len(sentence.split()) <= MAX_WORDS
        assert sentence[0].isupper() and sentence.endswith(".")
        assert ">>>" not in sentence and "::" not in sentence
