#!/usr/bin/env python3
"""meta-sandbox's contract with the real world: Meta's official Python SDK (facebook-business,
pinned in scripts/sdk-contract.sh) drives a running sandbox through every call the worker makes.

Usage: sdk_contract.py BASE_URL   (e.g. http://127.0.0.1:8089). Prints one line per check and
"N passed, M failed"; exits 1 when a check failed.
"""
import hashlib
import json
import sys
import time
import traceback
import urllib.request

from facebook_business.adobjects.adaccount import AdAccount
from facebook_business.adobjects.customaudience import CustomAudience
from facebook_business.adobjects.serverside.action_source import ActionSource
from facebook_business.adobjects.serverside.custom_data import CustomData
from facebook_business.adobjects.serverside.event import Event
from facebook_business.adobjects.serverside.event_request import EventRequest
from facebook_business.adobjects.serverside.user_data import UserData
from facebook_business.api import FacebookAdsApi
from facebook_business.exceptions import FacebookRequestError
from facebook_business.session import FacebookSession

BASE = sys.argv[1].rstrip("/")
VERSION = "v26.0"  # the SDK's own pinned version (apiconfig.py); the sandbox serves v25-v27
TOKEN = "sdk-contract-token"
ACCOUNT = "act_424242"
PIXEL = "909090"

# The SDK builds every URL from FacebookSession.GRAPH.
FacebookSession.GRAPH = BASE
api = FacebookAdsApi.init(access_token=TOKEN, api_version=VERSION)

results = []


def check(name):
    def run(fn):
        try:
            fn()
            results.append((name, None))
            print(f"ok    {name}")
        except Exception as e:  # noqa: BLE001 - every failure is reported, then counted
            results.append((name, e))
            print(f"FAIL  {name}: {e!r}")
            traceback.print_exc(limit=2, file=sys.stdout)
        return fn

    return run


def sandbox(path):
    with urllib.request.urlopen(f"{BASE}/_sandbox/{path}") as r:
        return json.loads(r.read())


def sha(value):
    return hashlib.sha256(value.encode()).hexdigest()


state = {}

# A clean sandbox: the checks count what it holds.
urllib.request.urlopen(urllib.request.Request(f"{BASE}/_sandbox/reset", method="POST")).read()


@check("create a custom audience, reading fields back after the write")
def _():
    audience = AdAccount(ACCOUNT).create_custom_audience(
        fields=["name", "subtype"],
        params={
            "name": "SDK contract",
            "subtype": "CUSTOM",
            "description": "made by the official SDK",
            "customer_file_source": "USER_PROVIDED_ONLY",
        },
    )
    assert audience["id"], audience
    assert audience["name"] == "SDK contract", audience
    state["audience"] = CustomAudience(audience["id"])


@check("add users with a session (multi-key, hashed by the SDK)")
def _():
    response = state["audience"].add_users(
        schema=["EMAIL", "FN"],
        users=[["mary@example.com", "Mary"], ["john@example.com", "John"], ["ana@example.com", "Ana"]],
        is_raw=True,
        session={"session_id": 101, "batch_seq": 1, "last_batch_flag": True, "estimated_num_total": 3},
    ).json()
    assert response["num_received"] == 3, response
    assert str(response["session_id"]) == "101", response


@check("remove users with a session")
def _():
    response = state["audience"].remove_users(
        schema=["EMAIL", "FN"],
        users=[["ana@example.com", "Ana"]],
        is_raw=True,
        session={"session_id": 102, "batch_seq": 1, "last_batch_flag": True},
    ).json()
    assert response["num_received"] == 1, response
    members = sandbox(f"audiences/{state['audience']['id']}/members")
    emails = sorted(m["EMAIL"] for m in members)
    assert emails == sorted([sha("mary@example.com"), sha("john@example.com")]), members


@check("replace users (usersreplace) in one session")
def _():
    payload = {"schema": ["EMAIL", "FN"], "data": [[sha("zoe@example.com"), sha("zoe")]], "is_raw": True}
    response = state["audience"].create_users_replace(
        params={"payload": payload, "session": {"session_id": 103, "batch_seq": 1, "last_batch_flag": True}}
    )
    assert response["num_received"] == 1, response
    assert response["account_id"], response
    members = sandbox(f"audiences/{state['audience']['id']}/members")
    assert [m["EMAIL"] for m in members] == [sha("zoe@example.com")], members


@check("create a value-based audience and add users with LOOKALIKE_VALUE (pre-hashed: the SDK would hash the value)")
def _():
    audience = AdAccount(ACCOUNT).create_custom_audience(
        fields=["is_value_based"],
        params={
            "name": "SDK value-based",
            "subtype": "CUSTOM",
            "is_value_based": True,
            "customer_file_source": "USER_PROVIDED_ONLY",
        },
    )
    assert audience["is_value_based"] is True, audience
    response = CustomAudience(audience["id"]).add_users(
        schema=["EMAIL", "LOOKALIKE_VALUE"],
        users=[[sha("mary@example.com"), "44.5"], [sha("john@example.com"), "140"]],
        is_raw=True,
        pre_hashed=True,
        session={"session_id": 104, "batch_seq": 1, "last_batch_flag": True},
    ).json()
    assert response["num_received"] == 2 and response["num_invalid_entries"] == 0, response
    members = sandbox(f"audiences/{audience['id']}/members")
    assert sorted(m["LOOKALIKE_VALUE"] for m in members) == ["140", "44.5"], members


@check("read the audience back with documented fields")
def _():
    audience = state["audience"].api_get(
        fields=[
            "name",
            "operation_status",
            "delivery_status",
            "approximate_count_lower_bound",
            "approximate_count_upper_bound",
            "time_content_updated",
            "sharing_status",
            "customer_file_source",
        ]
    )
    assert audience["name"] == "SDK contract", audience
    assert audience["operation_status"]["code"] == 200, audience
    assert audience["approximate_count_lower_bound"] >= 0, audience
    assert audience["customer_file_source"] == "USER_PROVIDED_ONLY", audience


@check("list the audience's upload sessions")
def _():
    sessions = list(state["audience"].get_sessions())
    ids = sorted(s["session_id"] for s in sessions)
    assert ids == ["101", "102", "103"], sessions
    assert all(s["stage"] == "completed" for s in sessions), sessions
    assert all(int(s["num_received"]) >= 1 for s in sessions), sessions


@check("an unknown field is refused with Meta's error")
def _():
    try:
        state["audience"].api_get(fields=["shoe_size"])
    except FacebookRequestError as e:
        assert e.api_error_code() == 100, e
        return
    raise AssertionError("no error")


@check("send Conversions API events with test_event_code, partner_agent and LDU")
def _():
    now = int(time.time())
    events = []
    for i in range(3):
        user = UserData(emails=[f"buyer{i}@example.com"], phones=["16505551212"], country_code="us")
        event = Event(
            event_name="Purchase",
            event_time=now - 60,
            event_id=f"sdk-order-{i}",
            action_source=ActionSource.PHYSICAL_STORE,
            user_data=user,
            custom_data=CustomData(value=12.5, currency="usd"),
            data_processing_options=["LDU"],
            data_processing_options_country=1,
            data_processing_options_state=1000,
        )
        events.append(event)
    response = EventRequest(
        pixel_id=PIXEL,
        events=events,
        test_event_code="TEST4242",
        partner_agent="cdp-meta-sync-contract",
    ).execute()
    assert response.events_received == 3, response
    received = sandbox(f"events?pixel_id={PIXEL}")
    assert len(received) == 3, received
    first = received[0]
    assert first["test_event_code"] == "TEST4242", first
    assert first["partner_agent"] == "cdp-meta-sync-contract", first
    assert first["event"]["data_processing_options"] == ["LDU"], first
    assert first["event"]["user_data"]["em"] == [sha("buyer0@example.com")], first


@check("an invalid event is refused with code 100 and the event's index")
def _():
    bad = Event(
        event_name="Purchase",
        event_time=int(time.time()),
        action_source=ActionSource.WEBSITE,
        user_data=UserData(),
    )
    try:
        EventRequest(pixel_id=PIXEL, events=[bad]).execute()
    except FacebookRequestError as e:
        assert e.api_error_code() == 100, e
        assert "event 0" in (e.body().get("error", {}).get("error_user_msg") or ""), e.body()
        return
    raise AssertionError("no error")


@check("an expired API version is refused with Meta's 2635")
def _():
    old = FacebookAdsApi(FacebookSession(access_token=TOKEN), api_version="v24.0")
    try:
        old.call("GET", (state["audience"]["id"],), params={"fields": "name"})
    except FacebookRequestError as e:
        assert e.api_error_code() == 2635, e
        return
    raise AssertionError("no error")


failed = [name for name, error in results if error is not None]
print(f"{len(results) - len(failed)} passed, {len(failed)} failed")
sys.exit(1 if failed else 0)
