"""Finding ``@username`` mentions in a message's text."""

from __future__ import annotations

import re

__all__ = ["MAX_MENTIONS", "find_mentions"]

#: At most this many distinct users are notified for one message.
MAX_MENTIONS = 10

# An "@" at the start or after a character that cannot be part of a name (so "me@example.com" is no mention),
# followed by the characters Django allows in usernames (not starting with another "@").
_MENTION = re.compile(r"(?<![\w@.+-])@([\w.+-][\w.@+-]{0,149})")


def find_mentions(text: str) -> list[str]:
    """The distinct usernames mentioned in ``text``, in order, at most ``MAX_MENTIONS``.

    A trailing ``.`` or ``-`` is punctuation, not part of the name: "thanks @ann." mentions ``ann``.
    """
    names: list[str] = []
    for match in _MENTION.finditer(text):
        name = match.group(1).rstrip(".-")
        if name and name not in names:
            names.append(name)
            if len(names) == MAX_MENTIONS:
                break
    return names
