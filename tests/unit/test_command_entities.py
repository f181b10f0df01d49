"""shared/entities.py: hashtags, mention candidates and links, from text alone."""

from __future__ import annotations

from shared.entities import MAX_MENTIONS, extract


def test_hashtags_are_lower_cased_unique_and_in_order() -> None:
    e = extract("#Python and #python, then #café_2 #日本語 and #Zebra! #python")
    assert e.hashtags == ("python", "café_2", "日本語", "zebra")


def test_hashtag_needs_a_boundary_before_it() -> None:
    assert extract("a#b c##d &#123; #").hashtags == ()


def test_mentions_are_candidates_unique_regardless_of_case() -> None:
    e = extract("hi @Alice and @alice, @bob_2. mail me: carol@example.com @@dave")
    assert e.mention_names == ("Alice", "bob_2")


def test_overlong_names_and_tags_are_plain_text() -> None:
    e = extract("@" + "a" * 31 + " #" + "t" * 101)
    assert e.mention_names == ()
    assert e.hashtags == ()


def test_mentions_are_capped() -> None:
    text = " ".join(f"@user{i}" for i in range(MAX_MENTIONS + 10))
    assert len(extract(text).mention_names) == MAX_MENTIONS


def test_links_drop_sentence_punctuation_and_unbalanced_closers() -> None:
    e = extract(
        "see https://example.com/a. and (https://x.org/b) or "
        "https://en.wikipedia.org/wiki/Python_(language), also http://a.b/c?d=1&e=2!"
    )
    assert e.links == (
        "https://example.com/a",
        "https://x.org/b",
        "https://en.wikipedia.org/wiki/Python_(language)",
        "http://a.b/c?d=1&e=2",
    )


def test_link_contents_are_neither_tags_nor_mentions() -> None:
    e = extract("https://example.com/#top https://mastodon.social/@bob #real @real")
    assert e.links == ("https://example.com/#top", "https://mastodon.social/@bob")
    assert e.hashtags == ("real",)
    assert e.mention_names == ("real",)


def test_only_lower_case_http_schemes_and_non_empty_hosts_are_links() -> None:
    assert extract("ftp://x.org HTTP://X.ORG javascript:alert(1) https:// http://").links == ()


def test_duplicate_links_appear_once() -> None:
    assert extract("https://a.io https://a.io").links == ("https://a.io",)
