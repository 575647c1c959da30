"""Region choice is pure: peer address + headers in, region out."""

from __future__ import annotations

import ipaddress

import pytest

from talkwire.errors import ConfigError
from talkwire.signaling.regions import (
    RegionTable,
    choose_region,
    client_address,
    parse_region_table,
)

TABLE = parse_region_table(
    {
        "default_region": "eu",
        "networks": {
            "10.0.0.0/8": "eu",
            "10.9.0.0/16": "us",
            "2001:db8::/32": "ap",
            "192.0.2.0/24": "us",
        },
        "geo_header": "CF-IPCountry",
        "countries": {"de": "eu", "US": "us", "JP": "ap"},
    }
)


@pytest.mark.parametrize(
    ("peer", "region"),
    [
        ("10.1.2.3", "eu"),
        ("10.9.1.1", "us"),  # longest prefix wins over 10.0.0.0/8
        ("2001:db8::5", "ap"),
        ("::ffff:192.0.2.7", "us"),  # v4-mapped IPv6 from a dual-stack socket
        ("203.0.113.1", "eu"),  # unknown: default
        (None, "eu"),
        ("not-an-ip", "eu"),
    ],
)
def test_by_client_ip(peer: str | None, region: str) -> None:
    assert choose_region(TABLE, peer, {}) == region


def test_geo_header_beats_ip_and_is_case_insensitive() -> None:
    assert choose_region(TABLE, "10.1.2.3", {"cf-ipcountry": "jp"}) == "ap"
    assert choose_region(TABLE, "10.1.2.3", {"CF-IPCountry": "DE"}) == "eu"


def test_geo_header_may_name_a_region_directly() -> None:
    assert choose_region(TABLE, "10.1.2.3", {"CF-IPCountry": "us"}) == "us"


def test_unknown_geo_value_falls_through_to_ip() -> None:
    assert choose_region(TABLE, "10.9.0.1", {"CF-IPCountry": "XX"}) == "us"
    assert choose_region(TABLE, "203.0.113.1", {"CF-IPCountry": "XX"}) == "eu"


def test_with_trusted_proxies_only_they_may_set_the_geo_header() -> None:
    table = parse_region_table(
        {
            "networks": {"198.51.100.0/24": "us"},
            "geo_header": "CF-IPCountry",
            "countries": {"JP": "ap"},
            "trusted_proxies": ["10.0.0.0/8"],
        },
        "eu",
    )
    assert choose_region(table, "10.0.0.5", {"CF-IPCountry": "JP"}) == "ap"  # the CDN's
    # A client reaching signaling around the CDN cannot pick its region so.
    assert choose_region(table, "198.51.100.7", {"CF-IPCountry": "JP"}) == "us"


def test_geo_header_ignored_when_not_configured() -> None:
    table = parse_region_table({"networks": {"10.0.0.0/8": "x"}}, "local")
    assert choose_region(table, "192.0.2.1", {"CF-IPCountry": "US"}) == "local"


def test_forwarded_header_trusted_only_from_trusted_proxies() -> None:
    table = parse_region_table(
        {
            "networks": {"198.51.100.0/24": "us"},
            "client_ip_header": "X-Forwarded-For",
            "trusted_proxies": ["127.0.0.1/32"],
        },
        "eu",
    )
    headers = {"X-Forwarded-For": "10.0.0.1, 198.51.100.9"}
    # Behind the trusted proxy: the address it appended (the last one).
    assert client_address(table, "127.0.0.1", headers) == ipaddress.ip_address("198.51.100.9")
    assert choose_region(table, "127.0.0.1", headers) == "us"
    # Anyone else: the TCP peer; their header is a claim, not a fact.
    assert choose_region(table, "203.0.113.5", headers) == "eu"
    assert choose_region(table, "127.0.0.1", {"X-Forwarded-For": "garbage"}) == "eu"


def test_default_region_flag_overrides_file() -> None:
    assert parse_region_table({"default_region": "eu"}, "local").default_region == "local"
    assert RegionTable().default_region == "local"


@pytest.mark.parametrize(
    "data",
    [
        [],
        {"networks": {"10.0.0.0/33": "eu"}},
        {"networks": {"10.0.0.0/8": 5}},
        {"networks": ["10.0.0.0/8"]},
        {"client_ip_header": "X-Forwarded-For"},  # without trusted proxies
        {"trusted_proxies": "127.0.0.1"},
        {"geo_header": ""},
        {"regions": {}},  # unknown key: a typo must not be silently ignored
        {"default_region": 3},
    ],
)
def test_bad_tables_are_config_errors(data: object) -> None:
    with pytest.raises(ConfigError):
        parse_region_table(data)
