"""c-TF-IDF labels: the words that set each cluster apart, not the words they share."""
from __future__ import annotations

import random

from services.labeler import ctfidf
from tests.support.labeler_fakes import TOPICS, sentence, topic_words

OWN_WORDS = topic_words()


def _texts(n: int = 30, seed: int = 3) -> dict[str, list[str]]:
    rng = random.Random(seed)
    return {topic: [sentence(topic, rng)[1] for _ in range(n)] for topic in TOPICS}


def _words(term: str) -> set[str]:
    return set(term.casefold().replace(",", " ").split())


def test_top_keywords_are_the_topic_words_of_each_cluster():
    keywords = ctfidf.class_tfidf(_texts(), top_n=8)
    for topic, kw in keywords.items():
        assert len(kw.terms) == 8
        words = set().union(*(_words(t) for t in kw.terms[:5]))
        assert words <= OWN_WORDS[topic], (topic, kw.terms)


def test_labels_name_the_topic_and_are_title_cased():
    keywords = ctfidf.class_tfidf(_texts())
    for topic, kw in keywords.items():
        label = ctfidf.label_from_keywords(kw.terms)
        assert 2 <= len(label.replace(",", " ").split()) <= 4, label
        assert _words(label) <= OWN_WORDS[topic], (topic, label)
        assert all(w[0].isupper() for w in label.replace(",", " ").split()), label


def test_stop_words_and_numbers_never_become_keywords():
    texts = {"a": ["the rocket and the moon 2024 rocket rocket", "this is the rocket"],
             "b": ["the pasta with the sauce 42 pasta", "that is the pasta"]}
    keywords = ctfidf.class_tfidf(texts, top_n=10)
    for kw in keywords.values():
        for term in kw.terms:
            assert not _words(term) & {"the", "and", "this", "is", "that", "with"}, term
            assert not any(ch.isdigit() for ch in term), term
    assert keywords["a"].terms[0] == "rocket"
    assert keywords["b"].terms[0] == "pasta"


def test_bigrams_are_counted_and_replace_the_unigram_they_explain():
    texts = {"ml": ["machine learning models", "machine learning in practice", "deep machine learning"],
             "food": ["fresh bread", "baked bread daily", "bread and butter"]}
    keywords = ctfidf.class_tfidf(texts, top_n=5)
    assert "machine learning" in keywords["ml"].terms
    assert "machine" not in keywords["ml"].terms and "learning" not in keywords["ml"].terms


def test_words_shared_by_every_cluster_rank_below_distinctive_words():
    texts = {"a": ["report about rockets", "report on rockets launch"],
             "b": ["report about pasta", "report on pasta sauce"],
             "c": ["report about goals", "report on goals scored"]}
    keywords = ctfidf.class_tfidf(texts, top_n=3)
    for cid, distinctive in (("a", "rockets"), ("b", "pasta"), ("c", "goals")):
        assert keywords[cid].terms[0] == distinctive
        assert "report" not in keywords[cid].terms[:1]


def test_clusters_without_words_get_no_keywords():
    keywords = ctfidf.class_tfidf({"a": ["rocket launch"], "b": [], "c": ["the and of"]})
    assert keywords["a"].terms
    assert keywords["b"].terms == [] and keywords["c"].terms == []
    assert ctfidf.class_tfidf({"x": []})["x"].terms == []


def test_unique_labels_extend_a_repeat_with_the_next_distinguishing_keyword():
    labels = ctfidf.unique_labels(
        {"cl_0": "Space, Rocket", "cl_1": "Space, Rocket", "cl_2": "space, rocket"},
        {"cl_0": ["space", "rocket"], "cl_1": ["space", "rocket", "moon"], "cl_2": ["rocket", "space"]},
    )
    assert labels["cl_0"] == "Space, Rocket"
    assert labels["cl_1"] == "Space, Rocket (Moon)"
    assert labels["cl_2"] == "space, rocket (2)"  # no keyword left to tell it apart
    assert len({v.casefold() for v in labels.values()}) == 3


def test_labels_are_never_made_of_stop_words_contractions_or_fillers():
    chatty = ["Man, don't just sit there, it's really the thing you know",
              "Just man, I don't know, we'll get it, really"] * 10
    topic = ["The rocket launch reached orbit", "A rocket launch needs fuel for orbit"] * 10
    keywords = ctfidf.class_tfidf({"chat": chatty + topic[:2], "space": topic})
    for term in keywords["chat"].terms + keywords["space"].terms:
        assert not (_words(term) & {"man", "don't", "don", "just", "it's", "we'll", "really", "know", "thing"}), term
    assert "rocket launch" in keywords["space"].terms  # the keyphrase, not its words apart


def test_possessives_count_as_their_word_and_forms_of_one_word_appear_once():
    texts = {"a": ["Earth's orbit and the earth", "games and a game of religion", "religious games"] * 5,
             "b": ["Cooking pasta with tomato sauce"] * 5}
    terms = ctfidf.class_tfidf(texts, top_n=10)["a"].terms
    assert "earth" in terms and not any("'" in t for t in terms)
    assert not ({"game", "games"} <= set(terms)) and not ({"religion", "religious"} <= set(terms))
    assert ctfidf._same_stem("mathematics", "mathematical") and not ctfidf._same_stem("art", "artist")


def test_a_keyphrase_does_not_replace_its_word_when_it_repeats_another_kept_word():
    ranked = [("game", 0.15), ("strategy", 0.035), ("strategy game", 0.029), ("chess", 0.02)]
    assert [t for t, _ in ctfidf._drop_redundant(ranked, 10)] == ["game", "strategy", "chess"]
    assert [t for t, _ in ctfidf._drop_redundant([("extra", 1.0), ("extra time", 0.9)], 10)] == ["extra time"]
