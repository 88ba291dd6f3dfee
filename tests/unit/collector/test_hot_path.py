"""The pixel hot path's fast versions agree with the standard library they replace."""

from __future__ import annotations

import ipaddress
import re
import uuid
from urllib.parse import parse_qsl

import httptools
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from collector.edge import valid_visitor
from collector.http import Request, parse_query, split_target
from collector.privacy import anonymize_ip
from collector.service import new_visitor_id

query_chars = st.sampled_from([*"ab=&+%20zZé;/?x1 ", "%2", "%%", "==", "%C3%A9", "%e9", "%20"])


@given(st.lists(query_chars, max_size=40).map("".join))
def test_parse_query_equals_parse_qsl(query: str) -> None:
    expected = dict(parse_qsl(query, keep_blank_values=False, max_num_fields=100))
    assert parse_query(query, max_fields=100) == expected


def test_parse_query_refuses_too_many_fields_like_parse_qsl() -> None:
    query = "&".join(f"k{i}=v" for i in range(101))
    with pytest.raises(ValueError):
        parse_qsl(query, max_num_fields=100)
    with pytest.raises(ValueError):
        parse_query(query, max_fields=100)


def _slow_anonymize(ip: str) -> str:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return ""
    prefix = 24 if addr.version == 4 else 48
    return str(ipaddress.ip_network(f"{addr}/{prefix}", strict=False).network_address)


octet = st.one_of(
    st.integers(0, 300).map(str), st.sampled_from(["01", "00", "²", "", "x", " 1", "0x1"])
)


@given(st.lists(octet, min_size=3, max_size=5).map(".".join))
def test_anonymize_ip_fast_path_equals_ipaddress(ip: str) -> None:
    assert anonymize_ip(ip) == _slow_anonymize(ip)


@given(st.ip_addresses())
def test_anonymize_ip_on_real_addresses(
    addr: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> None:
    assert anonymize_ip(str(addr)) == _slow_anonymize(str(addr))


def test_produce_latency_histogram_is_cumulative() -> None:
    from collector.metrics import Metrics

    metrics = Metrics()
    for seconds in (0.0005, 0.001, 0.003, 0.02, 0.02, 7.0, 60.0):
        metrics.observe_produce(seconds)
    text = metrics.render().decode()
    assert 'trackpipe_produce_latency_seconds_bucket{le="0.001"} 2' in text
    assert 'trackpipe_produce_latency_seconds_bucket{le="0.005"} 3' in text
    assert 'trackpipe_produce_latency_seconds_bucket{le="0.025"} 5' in text
    assert 'trackpipe_produce_latency_seconds_bucket{le="10.0"} 6' in text
    assert 'trackpipe_produce_latency_seconds_bucket{le="+Inf"} 7' in text


def test_librdkafka_latency_windows_become_shares_of_their_records() -> None:
    from collector.sinks.confluent import latency_shares

    window = {"cnt": 1000, "p50": 8000, "p75": 9000, "p90": 12000, "p95": 15000}
    window |= {"p99": 30000, "p99_99": 90000}
    rtt = {"cnt": 40, "p50": 1000, "p75": 1000, "p90": 2000, "p95": 2000, "p99": 5000}
    rtt |= {"p99_99": 10000}
    stats = {
        "brokers": {
            "127.0.0.1:9092/1": {"int_latency": window, "rtt": rtt},
            "127.0.0.1:9092/bootstrap": {"int_latency": {"cnt": 0}, "rtt": {"cnt": 0}},
        }
    }
    shares = latency_shares(stats)
    assert sum(count for _, count in shares) == 1000  # every record of the window, once
    assert shares[0] == (0.009, 500)  # half the records: queue p50 + round trip p50
    assert shares[-1] == (0.1, 10)  # the tail: p99.99 of both
    assert latency_shares({}) == []


def test_event_ids_are_32_hex_digits_and_do_not_repeat() -> None:
    from collector.service import new_event_id

    ids = [new_event_id() for _ in range(20_000)]  # several refills of the random buffer
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)


def test_a_forked_collector_process_draws_its_own_event_ids() -> None:
    import os

    from collector.service import new_event_id

    new_event_id()  # the parent holds a pool of ids
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: the supervisor's workers are forked like this
        os.write(write, "".join(new_event_id() for _ in range(8)).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = os.read(read, 1024).decode()
    parent = "".join(new_event_id() for _ in range(8))
    assert {child[i : i + 32] for i in range(0, 256, 32)}.isdisjoint(
        {parent[i : i + 32] for i in range(0, 256, 32)}
    )


def _slow_cookie(header: str, name: str) -> str | None:
    for part in header.split(";"):
        key, sep, value = part.strip().partition("=")
        if sep and key == name:
            return value
    return None


cookie_parts = st.sampled_from(["tp_vid", "tp_optout", "x", "=", ";", " ", "1", "ab", "tp_vid="])


@given(st.lists(cookie_parts, max_size=12).map("".join) | st.text(max_size=30))
def test_cookies_read_in_one_pass_equal_reading_each(header: str) -> None:
    request = Request("GET", "/i", "", {"cookie": header}, b"", "")
    expected = [_slow_cookie(header, "tp_vid"), _slow_cookie(header, "tp_optout")]
    assert request.cookies("tp_vid", "tp_optout") == expected
    assert request.cookie("tp_optout") == expected[1]


@given(st.text("0123456789abcdefABCDEF g\n", min_size=30, max_size=34) | st.text(max_size=34))
def test_valid_visitor_equals_the_hex_pattern(value: str) -> None:
    assert valid_visitor(value) == (re.fullmatch(r"[0-9a-f]{32}", value) is not None)


def test_visitor_ids_are_random_uuid4s_as_uuid4_hex_gives_them() -> None:
    ids = [new_visitor_id() for _ in range(5000)]
    assert len(set(ids)) == len(ids)
    for value in ids:
        parsed = uuid.UUID(hex=value)
        assert (parsed.hex, parsed.version, parsed.variant) == (value, 4, uuid.RFC_4122)
        assert valid_visitor(value)
    # The variant digit keeps its two random bits; the other digits take every value.
    assert {value[16] for value in ids} == set("89ab")
    random_digits = (*range(12), *range(13, 16), *range(17, 32))
    assert all(len({value[i] for value in ids}) == 16 for i in random_digits)


# Pieces of request targets; the bytes past ASCII's visible range as latin-1 characters.
target_parts = st.sampled_from(["/", "i", "?", "&", "=", "#", " ", "%", ":", "@", "http:", "//h"])
odd_bytes = st.sampled_from(["\x00", "\t", "\x7f", "\x80", "\xc3\xa9", "\xff", "~", "*"])
targets = st.lists(target_parts | odd_bytes, max_size=12).map("".join)


@given(targets | targets.map("/".__add__))  # most targets a client sends are in origin form
@example("/i?s=shop#top")
@example("/i?s=\x7f")
@example("/i?s=\xc3\xa9")  # UTF-8 as received: visible latin-1 characters, refused
def test_split_target_equals_httptools_parse_url(text: str) -> None:
    target = text.encode("latin-1")
    try:
        parsed = httptools.parse_url(target)
        expected = (parsed.path.decode("latin-1"), (parsed.query or b"").decode("latin-1"))
    except (httptools.HttpParserInvalidURLError, AttributeError) as exc:
        with pytest.raises(type(exc)):
            split_target(bytearray(target))
    else:
        assert split_target(bytearray(target)) == expected


@pytest.mark.parametrize(
    "labels", [{}, {"path": "/i"}, {"reason": "invalid", "source": "pixel"}, {"b": "1", "a": "2"}]
)
def test_a_counter_added_by_its_key_is_the_counter_inc_counts(labels: dict[str, str]) -> None:
    from collector.metrics import Metrics

    by_name, by_key = Metrics(), Metrics()
    by_name.inc("requests_total", 2, **labels)
    by_name.inc("requests_total", **labels)
    by_key.add(Metrics.key("requests_total", **labels), 2)
    by_key.add(Metrics.key("requests_total", **labels))
    assert by_key.render() == by_name.render()
    assert by_key.get("requests_total", **labels) == 3
