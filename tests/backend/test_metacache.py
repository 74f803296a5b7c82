"""The metadata cache's own rules, without Redis: which fills it keeps, and its bounds.

Shortcut: attributes are built by hand (``attr``); what fills them in a volume
(replies, events) is tested with a real server in test_write_behind.py.
"""

from __future__ import annotations

from redisfuse.backend.keys import Ino
from redisfuse.backend.metacache import MAX_LISTED_NAMES, MetaCache
from redisfuse.backend.model import Attr


def attr(ino: int, version: int, size: int = 0) -> Attr:
    return Attr(Ino(ino), 0o100644, 1, 0, 0, size, 0, 0, 0, 0, version, 0)


def cache() -> MetaCache:
    c = MetaCache(ttl=10.0)
    c.enabled = True
    return c


def test_an_older_version_never_replaces_a_newer_one() -> None:
    c = cache()
    assert c.put_attr(attr(5, 3, size=300), c.ticket())
    assert not c.put_attr(attr(5, 2, size=200), c.ticket())
    assert c.attr(5) == attr(5, 3, size=300)


def test_a_reply_sent_before_a_drop_is_not_kept() -> None:
    c = cache()
    ticket = c.ticket()  # a request is sent ...
    c.drop_attr(5)  # ... an event says inode 5 changed ...
    assert not c.put_attr(attr(5, 9), ticket)  # ... and then its reply comes
    assert c.attr(5) is None
    assert c.put_attr(attr(5, 9), c.ticket())  # a request sent after the event may fill


def test_a_change_of_this_node_fills_with_its_own_reply_unless_overtaken() -> None:
    c = cache()
    mine = c.ticket()
    c.changing(mine, [5], [])  # sent
    other = c.ticket()  # a read sent meanwhile (it may see the state before the change)
    c.changing(mine, [5], [])  # replied
    assert not c.put_attr(attr(5, 1), other)
    assert c.put_attr(attr(5, 2), mine)
    overtaken = c.ticket()
    c.changing(overtaken, [6], [])
    c.drop_attr(6)  # another node's event between the change and its reply
    c.changing(overtaken, [6], [])
    assert not c.put_attr(attr(6, 2), overtaken)


def test_a_late_newer_reply_drops_an_older_kept_one() -> None:
    c = cache()
    assert c.put_attr(attr(5, 1), c.ticket())
    ticket = c.ticket()
    c.drop_attr(5)
    assert c.put_attr(attr(5, 2), c.ticket())
    c.drop_attr(5)
    assert c.put_attr(attr(5, 3), c.ticket())
    assert not c.put_attr(attr(5, 4), ticket)  # too late to keep, but it proves 3 old
    assert c.attr(5) is None


def test_listings_hold_a_bounded_number_of_names_oldest_going_first() -> None:
    c = cache()
    per = MAX_LISTED_NAMES // 4
    for parent in range(1, 6):
        c.put_listing(parent, {b"n%d" % i for i in range(per)})
    assert c.absent(5, b"other") and c.absent(2, b"other")
    assert not c.absent(1, b"other")  # the oldest listing went to make room
    c.add_name(2, b"new")  # a change of this node renews listing 2 ...
    c.put_listing(6, {b"n%d" % i for i in range(per)})
    assert c.absent(2, b"other")  # ... so listing 3 went instead
    assert not c.absent(3, b"other")
    c.put_listing(7, {b"n%d" % i for i in range(MAX_LISTED_NAMES + 1)})
    assert not c.absent(7, b"other")  # too large to keep at all
