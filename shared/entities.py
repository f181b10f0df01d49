"""Entities in a post's text: hashtags, mention candidates and links. Pure; no I/O.

Links are found first and blanked out before hashtags and mentions are searched, so the
fragment of `https://example.com/#top` is no hashtag and `https://x.org/@bob` mentions nobody.
Mentions come back as *candidate* usernames: only the command service, which knows which
accounts exist, turns them into `Mention`s; unknown names stay plain text.

Every result respects the limits of the event types (shared/events.py), so an extracted entity
can never make an event the projector would reject as invalid.
"""

from __future__ import annotations

import re
from typing import Final

import msgspec

MAX_MENTIONS: Final = 50
MAX_HASHTAGS: Final = 50
MAX_LINKS: Final = 50
MAX_HASHTAG_LENGTH: Final = 100
MAX_USERNAME_LENGTH: Final = 30
MIN_URL_LENGTH: Final = 8
MAX_URL_LENGTH: Final = 2048

# Lower-case scheme only: it is what the event type's Url pattern accepts.
_LINK: Final = re.compile(r"https?://[^\s<>\"'`]+")
# `\w` is Unicode-aware: letters and digits of every script, and underscore.
_HASHTAG: Final = re.compile(r"(?<![\w#&])#(\w+)")
# Usernames are ASCII (events.Username); a preceding word character is an e-mail address.
_MENTION: Final = re.compile(r"(?<![\w@])@([A-Za-z0-9_]+)(?![\w@])")
# Sentence punctuation right after a URL belongs to the sentence, not the URL.
_TRAILING: Final = ".,;:!?'\"*"
_CLOSERS: Final = {")": "(", "]": "[", "}": "{"}


class Entities(msgspec.Struct, frozen=True, kw_only=True):
    hashtags: tuple[str, ...] = ()
    mention_names: tuple[str, ...] = ()
    links: tuple[str, ...] = ()


def _trim_url(url: str) -> str:
    while url:
        last = url[-1]
        if last in _TRAILING:
            url = url[:-1]
        elif last in _CLOSERS and url.count(last) > url.count(_CLOSERS[last]):
            # "(see https://x.org/a)" — the parenthesis closes the sentence's, not the URL's.
            url = url[:-1]
        else:
            break
    return url


def _unique(items: list[str], key: str = "exact") -> tuple[str, ...]:
    seen: set[str] = set()
    out: list[str] = []
    for item in items:
        k = item.lower() if key == "lower" else item
        if k not in seen:
            seen.add(k)
            out.append(item)
    return tuple(out)


def extract_links(text: str) -> tuple[list[str], str]:
    """The links in order, and the text with each link's span blanked out."""
    links: list[str] = []
    chars = list(text)
    for m in _LINK.finditer(text):
        url = _trim_url(m.group(0))
        start = m.start()
        for i in range(start, start + len(url)):
            chars[i] = " "
        if MIN_URL_LENGTH <= len(url) <= MAX_URL_LENGTH and url.partition("://")[2]:
            links.append(url)
    return links, "".join(chars)


def extract(text: str) -> Entities:
    """Hashtags (lower-cased, unique, in order), mention candidates (unique regardless of case,
    in order, at most MAX_MENTIONS) and links (unique, in order)."""
    links, rest = extract_links(text)
    tags = [
        m.group(1).lower()
        for m in _HASHTAG.finditer(rest)
        if len(m.group(1).lower()) <= MAX_HASHTAG_LENGTH
    ]
    names = [m.group(1) for m in _MENTION.finditer(rest) if len(m.group(1)) <= MAX_USERNAME_LENGTH]
    return Entities(
        hashtags=_unique(tags)[:MAX_HASHTAGS],
        mention_names=_unique(names, key="lower")[:MAX_MENTIONS],
        links=_unique(links)[:MAX_LINKS],
    )
