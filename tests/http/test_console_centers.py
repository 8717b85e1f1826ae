"""What the console shows of a publisher's centers (docs/protocol.rst: The
operator API): its centers searched, sorted and paged; one center with its
subscribers by transport and its members; the history it retains, newest
first; and a tail that continues from where that history stands."""

from __future__ import annotations

import json
from typing import Any

import pytest
import pytest_twisted

from tests.support import (
    ADMIN_TOKEN,
    Api,
    event_source,
    expect_json_error,
    opened,
    start_daemon,
    subscriber_token,
    websocket,
)
from tests.support.memory import Recorder


def _site(*names: str, **sections: dict[str, Any]) -> Api:
    api = Api(**sections)
    api.add_publisher("site")
    for name in names:
        assert api.admin("PUT", f"/admin/v1/publishers/site/centers/{name}").status == 201
    return api


def _walk(api: Api, query: str, limit: int) -> tuple[list[list[str]], list[int]]:
    """Every page of a listing, as names; and the totals each page said."""
    pages, totals, cursor = [], [], None
    while True:
        path = f"/admin/v1/publishers/site/centers?limit={limit}{query}"
        answer = api.admin("GET", path + (f"&cursor={cursor}" if cursor else "")).json()
        pages.append([center["name"] for center in answer["centers"]])
        totals.append(answer["total"])
        cursor = answer["next"]
        if cursor is None:
            return pages, totals


def _subscribe(api: Api, center: str, n: int, transport: str = "websocket") -> list[Recorder]:
    hub = api.hub("site", center)
    subscribers = [Recorder(transport) for _ in range(n)]
    for subscriber in subscribers:
        hub.subscribe(subscriber)
    return subscribers


def test_centers_are_searched_by_prefix_and_paged_by_name_with_their_total():
    names = [f"user.{n}" for n in range(25)] + ["news", "room", "users"]
    api = _site(*names)
    pages, totals = _walk(api, "&prefix=user.", 10)
    assert pages == [sorted(f"user.{n}" for n in range(25))[i:i + 10] for i in (0, 10, 20)]
    assert totals == [25, 25, 25]
    pages, _ = _walk(api, "", 100)
    assert pages == [sorted(names)]
    # the default page is 100 centers, and the answer says there is no more
    whole = api.admin("GET", "/admin/v1/publishers/site/centers").json()
    assert (len(whole["centers"]), whole["next"], whole["total"]) == (len(names), None, len(names))
    assert whole["centers"][0] == {
        "name": "news", "path": "site/news", "private": False, "presence": False, "history": 100, "ttl": 0,
        "subscribers": 0, "last_id": None, "created": api.clock.seconds(), "last_ts": None}
    nothing = api.admin("GET", "/admin/v1/publishers/site/centers?prefix=zz").json()
    assert nothing == {"centers": [], "next": None, "total": 0}


def test_paging_gives_no_center_twice_and_skips_none_while_centers_come_and_go():
    api = _site(*(f"c{n:02}" for n in range(30)))
    first = api.admin("GET", "/admin/v1/publishers/site/centers?limit=10").json()
    assert [c["name"] for c in first["centers"]] == [f"c{n:02}" for n in range(10)]
    # one already shown goes, one before the page comes, one after comes
    assert api.admin("DELETE", "/admin/v1/publishers/site/centers/c03").status == 204
    assert api.admin("PUT", "/admin/v1/publishers/site/centers/a0").status == 201
    assert api.admin("PUT", "/admin/v1/publishers/site/centers/c15x").status == 201
    seen = []
    cursor = first["next"]
    while cursor:
        page = api.admin("GET", f"/admin/v1/publishers/site/centers?limit=10&cursor={cursor}").json()
        seen += [c["name"] for c in page["centers"]]
        cursor = page["next"]
    assert seen == sorted([f"c{n:02}" for n in range(10, 30)] + ["c15x"])
    assert page["total"] == 31


def test_centers_sorted_by_subscribers_or_activity_come_most_first_then_the_rest_by_name():
    api = _site("a", "b", "c", "d", "e", "f")
    auth = ("site", api.admin("POST", "/admin/v1/publishers/site/rotate").json()["secret"])
    for center, n in (("d", 3), ("b", 1), ("f", 3)):
        _subscribe(api, center, n)
    pages, totals = _walk(api, "&sort=subscribers", 2)
    assert pages == [["d", "f"], ["b", "a"], ["c", "e"]] and totals == [6, 6, 6]
    subscribers = api.admin("GET", "/admin/v1/publishers/site/centers?sort=subscribers").json()["centers"]
    assert [c["subscribers"] for c in subscribers] == [3, 3, 1, 0, 0, 0]
    for center in ("c", "a", "e", "c"):
        assert api.publish(auth, center, "x").status == 201
        api.clock.advance(1)
    pages, _ = _walk(api, "&sort=activity", 4)
    assert pages == [["c", "e", "a", "b"], ["d", "f"]]
    activity = api.admin("GET", "/admin/v1/publishers/site/centers?sort=activity&limit=3").json()["centers"]
    assert [c["last_ts"] for c in activity] == [api.clock.seconds() - n for n in (1, 2, 3)]
    # with a prefix, only the centers it names, ranked or not
    pages, totals = _walk(api, "&sort=subscribers&prefix=e", 5)
    assert pages == [["e"]] and totals == [1]


def test_a_ranked_page_continues_past_a_center_that_changed_rank_meanwhile():
    api = _site(*"abcdef")
    _subscribe(api, "a", 5), _subscribe(api, "b", 4), _subscribe(api, "c", 3)
    first = api.admin("GET", "/admin/v1/publishers/site/centers?sort=subscribers&limit=2").json()
    assert [c["name"] for c in first["centers"]] == ["a", "b"]
    _subscribe(api, "e", 1)
    rest = api.admin("GET", f"/admin/v1/publishers/site/centers?sort=subscribers&cursor={first['next']}").json()
    assert [c["name"] for c in rest["centers"]] == ["c", "e", "d", "f"] and rest["next"] is None


@pytest.mark.parametrize("query, message", [
    ("sort=size", "sort is one of"),
    ("limit=0", "limit is 1 to 1000"),
    ("limit=1001", "limit is 1 to 1000"),
    ("limit=ten", "limit is 1 to 1000"),
    ("cursor=%21%21", "cursor is not one"),
    ("cursor=WzEsMiwzXQ", "cursor is not one"),  # [1,2,3]
    ("prefix=" + "x" * 201, "prefix is at most 200"),
])
def test_a_listing_asked_for_wrongly_is_400_invalid_query(query, message):
    api = _site("news")
    answer = api.admin("GET", f"/admin/v1/publishers/site/centers?{query}")
    expect_json_error(answer.status, answer.json(), 400, "invalid_query")
    assert message in answer.json()["message"]


def test_a_cursor_of_another_sort_or_prefix_is_refused():
    api = _site(*"abc")
    cursor = api.admin("GET", "/admin/v1/publishers/site/centers?limit=1").json()["next"]
    for query in ("sort=activity", "prefix=b"):
        answer = api.admin("GET", f"/admin/v1/publishers/site/centers?{query}&cursor={cursor}")
        expect_json_error(answer.status, answer.json(), 400, "invalid_query")


def test_a_center_shows_its_subscribers_by_transport_and_its_members():
    api = _site("news")
    assert api.admin("PUT", "/admin/v1/publishers/site/centers/presence-room",
                     {"private": True, "presence": True}).status == 201
    _subscribe(api, "news", 2)
    _subscribe(api, "news", 1, "sse")
    _subscribe(api, "news", 3, "pusher")
    news = api.admin("GET", "/admin/v1/publishers/site/centers/news").json()
    assert news["transports"] == {"websocket": 2, "sse": 1, "longpoll": 0, "pusher": 3}
    assert news["subscribers"] == 6 and "member_list" not in news
    assert (news["name"], news["history"], news["last_ts"]) == ("news", 100, None)
    room = api.admin("GET", "/admin/v1/publishers/site/centers/presence-room").json()
    assert (room["members"], room["member_list"]) == (0, [])  # members: over real sockets, below
    missing = api.admin("GET", "/admin/v1/publishers/site/centers/nothing")
    expect_json_error(missing.status, missing.json(), 404, "no_such_center")
    refused = api.request("GET", "/admin/v1/publishers/site/centers/news")
    expect_json_error(refused.status, refused.json(), 401)


def test_a_center_s_history_is_paged_newest_first_up_to_where_it_stands():
    api = _site()
    assert api.admin("PUT", "/admin/v1/publishers/site/centers/news", {"history": 5}).status == 201
    auth = ("site", api.admin("POST", "/admin/v1/publishers/site/rotate").json()["secret"])
    empty = api.admin("GET", "/admin/v1/publishers/site/centers/news/messages").json()
    assert (empty["messages"], empty["next"], empty["retained"]) == ([], None, 0)
    ids = [api.publish(auth, "news", f"m{n}").json()["id"] for n in range(7)]
    api.request("POST", "/api/v1/centers/news/messages", '{"a": 1}', auth=auth,
                headers={"Content-Type": "application/json", "Notifier-Event": "json"})
    page = api.admin("GET", "/admin/v1/publishers/site/centers/news/messages?limit=2").json()
    newest = api.hub("site", "news").latest
    assert page["messages"] == [
        {"id": newest.id, "center": "news", "data": '{"a": 1}', "ts": newest.ts, "event": "json"},
        {"id": ids[6], "center": "news", "data": "m6", "ts": api.clock.seconds()}]
    assert page["position"] == newest.id and page["retained"] == 5 and page["next"] == ids[6]
    older = api.admin("GET", f"/admin/v1/publishers/site/centers/news/messages?before={page['next']}").json()
    assert [m["data"] for m in older["messages"]] == ["m5", "m4", "m3"] and older["next"] is None
    assert older["position"] == newest.id
    # an id of another epoch, or older than any kept, has nothing before it
    for before in ("other-3", ids[0]):
        answer = api.admin("GET", f"/admin/v1/publishers/site/centers/news/messages?before={before}").json()
        assert answer["messages"] == [] and answer["next"] is None
    for query in ("limit=0", "limit=x", "before=nonsense"):
        bad = api.admin("GET", f"/admin/v1/publishers/site/centers/news/messages?{query}")
        expect_json_error(bad.status, bad.json(), 400, "invalid_query")


def test_the_publisher_s_center_count_comes_from_the_store_s_index():
    api = _site(*(f"c{n}" for n in range(12)))
    assert api.admin("GET", "/admin/v1/publishers/site").json()["centers"] == 12


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_a_tail_since_the_history_s_position_continues_it_with_no_gap_or_duplicate(tmp_path):
    daemon = await start_daemon(f"sqlite:{tmp_path / 'n.db'}")
    try:
        node = daemon.service
        await node.publishers.add_publisher("site")
        await node.centers.create_center("site", "news")
        for n in range(3):
            await node.publishing.publish("site", "news", f"old{n}")
        status, history = await daemon.admin("GET", "/admin/v1/publishers/site/centers/news/messages")
        assert status == 200 and [m["data"] for m in history["messages"]] == ["old2", "old1", "old0"]
        # published after the history was read, before the tail opens
        for n in range(2):
            await node.publishing.publish("site", "news", f"between{n}")
        api_port = node.api_port.getHost().port
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        tail = await event_source(api_port, "/admin/v1/publishers/site/centers/news/tail"
                                  f"?since={history['position']}", headers)
        hello = json.loads((await tail.next())["data"])
        assert hello["recovered"] is True and hello["center"] == "news"
        await node.publishing.publish("site", "news", "live")
        seen = [json.loads((await tail.next())["data"]) for _ in range(3)]
        assert [m["data"] for m in seen] == ["between0", "between1", "live"]
        assert seen[0]["id"] != history["position"]
        tail.close()
        bad = await event_source(api_port, "/admin/v1/publishers/site/centers/news/tail?since=nope", headers)
        assert bad.status == 400
        # a position from before what is retained: what is, and said to be incomplete
        gone = await event_source(api_port, "/admin/v1/publishers/site/centers/news/tail?since=other-1", headers)
        assert json.loads((await gone.next())["data"])["recovered"] is False
        assert [json.loads((await gone.next())["data"])["data"] for _ in range(6)] == [
            "old0", "old1", "old2", "between0", "between1", "live"]
        gone.close()
    finally:
        await node.stopService()


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_a_presence_center_lists_its_members_and_its_subscribers_by_transport(tmp_path):
    daemon = await start_daemon(f"sqlite:{tmp_path / 'n.db'}")
    try:
        secret = await daemon.add_publisher("site")
        status, _ = await daemon.admin("PUT", "/admin/v1/publishers/site/centers/room",
                                       {"private": True, "presence": True})
        assert status == 201
        members = []
        for uid in ("17", "42"):
            token = subscriber_token(secret, centers=["room"], uid=uid, info={"name": f"user {uid}"})
            members.append(await websocket(f"{daemon.ws}/sub/site/room?format=json&token={token}",
                                           daemon.public_port))
            await opened(members[-1])
        status, room = await daemon.admin("GET", "/admin/v1/publishers/site/centers/room")
        assert status == 200 and room["members"] == 2
        assert sorted(room["member_list"], key=lambda m: m["uid"]) == [
            {"uid": "17", "info": {"name": "user 17"}}, {"uid": "42", "info": {"name": "user 42"}}]
        assert room["transports"] == {"websocket": 2, "sse": 0, "longpoll": 0, "pusher": 0}
        for member in members:
            member.close()
    finally:
        await daemon.service.stopService()
