from __future__ import annotations

import hashlib

from collector.privacy import anonymize_ip, hash_email, redact_query


def test_ipv4_loses_its_last_octet() -> None:
    assert anonymize_ip("203.0.113.77") == "203.0.113.0"


def test_ipv6_keeps_only_the_first_48_bits() -> None:
    assert anonymize_ip("2001:db8:abcd:12:1:2:3:4") == "2001:db8:abcd::"


def test_garbage_ip_becomes_empty() -> None:
    assert anonymize_ip("not-an-ip") == ""


def test_email_is_normalised_before_hashing() -> None:
    expected = hashlib.sha256(b"jane.doe@example.com").hexdigest()
    assert hash_email("  Jane.Doe@Example.COM ") == expected
    assert hash_email("") == ""


def test_redaction_removes_email_values_only() -> None:
    assert redact_query("s=shop&em=jane%40x.com&u=a") == "s=shop&em=<redacted>&u=a"
    assert redact_query("EMAIL=j@x&s=1") == "EMAIL=<redacted>&s=1"


def test_emails_in_free_text_are_hashed() -> None:
    from collector.privacy import scrub_text

    digest = hashlib.sha256(b"jane@example.com").hexdigest()
    assert scrub_text("https://s.ex/?who=Jane%40Example.com&x=1") == (
        f"https://s.ex/?who=sha256:{digest}&x=1"
    )
    assert scrub_text("no address here") == "no address here"


def test_emails_in_nested_properties_are_hashed_and_deep_nesting_is_safe() -> None:
    from collector.privacy import scrub_props

    digest = hashlib.sha256(b"jane@example.com").hexdigest()
    props = {
        "email": " Jane@Example.com",
        "form": [{"note": "write to jane@example.com"}],
        "n": 3,
        "e_mail": 7,
    }
    assert scrub_props(props) == {
        "email": f"sha256:{digest}",
        "form": [{"note": f"write to sha256:{digest}"}],
        "n": 3,
        "e_mail": "sha256:" + hashlib.sha256(b"7").hexdigest(),
    }
    deep: dict = {}
    node = deep
    for _ in range(5000):
        node["x"] = {}
        node = node["x"]
    node["email"] = "a@b.co"
    copy = scrub_props(deep)
    for _ in range(5000):
        copy = copy["x"]
    assert copy == {"email": "sha256:" + hashlib.sha256(b"a@b.co").hexdigest()}


def test_ipv4_fast_path_agrees_with_ipaddress() -> None:
    import ipaddress

    for ip in [
        "0.0.0.0",
        "10.1.2.3",
        "255.255.255.255",
        "256.1.1.1",
        "01.2.3.4",
        "1.2.3",
        "1.2.3.4.5",
        "١.٢.٣.٤",
        "+1.2.3.4",
        "1.2.3.-4",
        " 1.2.3.4",
    ]:
        try:
            net = ipaddress.ip_network(f"{ipaddress.ip_address(ip)}/24", strict=False)
            expected = str(net.network_address)
        except ValueError:
            expected = ""
        assert anonymize_ip(ip) == expected, ip
