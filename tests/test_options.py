"""Unit tests of ftpserver_core.options: parsing and merging the server options."""

import pytest
from django.test import override_settings

from ftpserver_core.conf import DEFAULTS
from ftpserver_core.handlers import DjangoFTPHandler
from ftpserver_core.options import (
    OptionError,
    ServerOptions,
    parse_address,
    parse_masquerade,
    parse_passive_ports,
    parse_port,
)

# --- parse_address


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("127.0.0.1:2121", ("127.0.0.1", 2121)),
        ("0.0.0.0:21", ("0.0.0.0", 21)),
        ("localhost:0", ("localhost", 0)),
        ("ftp.example.com:65535", ("ftp.example.com", 65535)),
        ("2121", ("default-host", 2121)),
        (" 2121 ", ("default-host", 2121)),
        (2121, ("default-host", 2121)),
        ("0", ("default-host", 0)),
        ("[::1]:2121", ("::1", 2121)),
        ("[::]:21", ("::", 21)),
        ("[2001:db8::10]:990", ("2001:db8::10", 990)),
    ],
)
def test_parse_address_accepts(value, expected):
    assert parse_address(value, "default-host") == expected


@pytest.mark.parametrize(
    "value",
    [
        "nonsense:xx",
        "[::1",
        "::1:2121",
        "[::1]",
        "host:",
        ":2121",
        "",
        "host:21:22",
        "host:-1",
        "host: 21",
        "[::1]2121",
    ],
)
def test_parse_address_refuses_malformed(value):
    with pytest.raises(OptionError) as info:
        parse_address(value, "127.0.0.1")
    assert info.value.name == "ADDRESS"
    assert repr(value.strip()) in info.value.message
    assert "HOST:PORT" in info.value.message
    assert str(info.value) == info.value.message


@pytest.mark.parametrize("value", ["70000", "127.0.0.1:65536", "[::1]:99999"])
def test_parse_address_refuses_out_of_range_port(value):
    with pytest.raises(OptionError) as info:
        parse_address(value, "127.0.0.1")
    assert info.value.name == "PORT"
    port = value.rsplit(":", 1)[-1]
    assert f"{port!r} is not a valid port" in info.value.message
    assert "0 to 65535" in info.value.message


@pytest.mark.parametrize("value", ["[1.2.3.4]:21", "[not-ipv6]:21", "[::g]:21"])
def test_parse_address_refuses_bad_ipv6_in_brackets(value):
    with pytest.raises(OptionError) as info:
        parse_address(value, "127.0.0.1")
    host = value[1 : value.index("]")]
    assert info.value.message == f"{host!r} is not a valid IPv6 address."


@pytest.mark.parametrize(
    ("value", "expected"), [(0, 0), ("21", 21), ("65535", 65535), (2121, 2121)]
)
def test_parse_port_accepts(value, expected):
    assert parse_port(value) == expected


@pytest.mark.parametrize("value", [-1, 65536, "abc", None, "21.5", ""])
def test_parse_port_refuses(value):
    with pytest.raises(OptionError) as info:
        parse_port(value, name="SOMEPORT")
    assert info.value.name == "SOMEPORT"
    assert info.value.message.startswith(f"{value!r} is not a valid port")


# --- parse_passive_ports


def test_parse_passive_ports_range_is_inclusive():
    ports = parse_passive_ports("30000-30100")
    assert len(ports) == 101
    assert ports[0] == 30000
    assert ports[-1] == 30100
    assert ports == list(range(30000, 30101))


def test_parse_passive_ports_mixes_single_ports_and_ranges():
    assert parse_passive_ports("12345,30000-30002") == [12345, 30000, 30001, 30002]


def test_parse_passive_ports_sorts_and_merges_overlaps():
    assert parse_passive_ports("30005, 30000-30003,30002-30004,1") == [
        1,
        30000,
        30001,
        30002,
        30003,
        30004,
        30005,
    ]


def test_parse_passive_ports_single_port():
    assert parse_passive_ports("30000") == [30000]
    assert parse_passive_ports("30000-30000") == [30000]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ([30002, 30000, 30001], [30000, 30001, 30002]),
        ((1, 65535), [1, 65535]),
        (range(40000, 40003), [40000, 40001, 40002]),
        (["30000", "30001"], [30000, 30001]),
        ([30001, 30000, 30001], [30000, 30001]),
    ],
)
def test_parse_passive_ports_accepts_iterables_of_ints(value, expected):
    assert parse_passive_ports(value) == expected


@pytest.mark.parametrize("value", [None, ""])
def test_parse_passive_ports_blank_means_kernel_picks(value):
    assert parse_passive_ports(value) is None


@pytest.mark.parametrize(
    ("value", "quoted"),
    [
        ("abc", "'abc' is not valid"),
        ("30000-", "'30000-' is not valid"),
        ("-30000", "'-30000' is not valid"),
        ("30000-30100,", "'30000-30100,' is not valid"),
        ("30000:30100", "'30000:30100' is not valid"),
        ("1-2-3", "'1-2-3' is not valid"),
        ("30100-30000", "'30100-30000' in '30100-30000' is an empty range"),
        ("12345,30100-30000", "'30100-30000' in '12345,30100-30000' is an empty range"),
        ("0-5", "'0-5' is not valid: ports must be between 1 and 65535"),
        ("0", "'0' is not valid: ports must be between 1 and 65535"),
        (
            "65535-65536",
            "'65535-65536' is not valid: ports must be between 1 and 65535",
        ),
        ([0, 1], "[0, 1] is not valid: ports must be between 1 and 65535"),
        ([], "[] is not valid: ports must be between 1 and 65535"),
        (["x"], "['x'] is not valid"),
        (30000, "30000 is not valid"),
    ],
)
def test_parse_passive_ports_refuses(value, quoted):
    with pytest.raises(OptionError) as info:
        parse_passive_ports(value)
    assert info.value.name == "PASSIVE_PORTS"
    assert quoted in info.value.message


def test_parse_passive_ports_error_shows_an_example():
    with pytest.raises(OptionError) as info:
        parse_passive_ports("abc")
    assert "'30000-30100'" in info.value.message


# --- parse_masquerade


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("203.0.113.10", "203.0.113.10"),
        (" 198.51.100.7 ", "198.51.100.7"),
        (None, None),
        ("", None),
    ],
)
def test_parse_masquerade_accepts_ipv4(value, expected):
    assert parse_masquerade(value) == expected


@pytest.mark.parametrize(
    "value",
    ["ftp.example.com", "::1", "2001:db8::1", "256.1.1.1", "203.0.113", "1.2.3.4/32"],
)
def test_parse_masquerade_refuses_hostnames_and_ipv6(value):
    with pytest.raises(OptionError) as info:
        parse_masquerade(value)
    assert info.value.name == "MASQUERADE_ADDRESS"
    assert info.value.message.startswith(f"{value!r} is not an IPv4 address")


# --- ServerOptions.from_settings


def test_from_settings_defaults():
    options = ServerOptions.from_settings()
    assert options.host == DEFAULTS["HOST"]
    assert options.port == DEFAULTS["PORT"]
    assert options.passive_ports is None
    assert options.masquerade_address is None
    assert options.certfile is None
    assert options.tls is False
    assert options.handler is DjangoFTPHandler
    assert options.timeout == DEFAULTS["TIMEOUT"]
    assert options.max_connections == DEFAULTS["MAX_CONNECTIONS"]
    assert options.max_connections_per_ip == 20
    assert options.logins_per_address == DEFAULTS["LOGINS_PER_ADDRESS"]
    assert options.login_grace == DEFAULTS["LOGIN_GRACE"]
    assert options.banner == DEFAULTS["BANNER"]
    assert options.pidfile is None


@override_settings(FTPSERVER_AUTH_FAILED_DELAY=0.05)
def test_from_settings_reads_tests_settings():
    # tests/settings.py sets it; the default is 3.0.
    assert ServerOptions.from_settings().auth_failed_delay == 0.05


@pytest.mark.parametrize(
    ("field", "setting", "from_setting", "override", "default"),
    [
        (
            "banner",
            "FTPSERVER_BANNER",
            "From settings",
            "From option",
            "FTP server ready.",
        ),
        ("timeout", "FTPSERVER_TIMEOUT", 60, "7", 300),
        ("port", "FTPSERVER_PORT", 2200, 2300, 2121),
        ("host", "FTPSERVER_HOST", "0.0.0.0", "::1", "127.0.0.1"),
        ("max_connections", "FTPSERVER_MAX_CONNECTIONS", 10, "3", 512),
        ("max_connections_per_ip", "FTPSERVER_MAX_CONNECTIONS_PER_IP", 4, "2", 20),
        (
            "masquerade_address",
            "FTPSERVER_MASQUERADE_ADDRESS",
            "198.51.100.1",
            "203.0.113.10",
            None,
        ),
        ("passive_ports", "FTPSERVER_PASSIVE_PORTS", "30000-30001", "40000", None),
        ("pidfile", "FTPSERVER_PIDFILE", "/run/a.pid", "/run/b.pid", None),
    ],
)
def test_from_settings_precedence(field, setting, from_setting, override, default):
    expected = {
        "timeout": 7,
        "max_connections": 3,
        "max_connections_per_ip": 2,
        "passive_ports": [40000],
    }
    setting_expected = {"passive_ports": [30000, 30001]}
    # No setting, no option: the default.
    assert getattr(ServerOptions.from_settings(), field) == default
    with override_settings(**{setting: from_setting}):
        # The setting beats the default.
        assert getattr(ServerOptions.from_settings(), field) == setting_expected.get(
            field, from_setting
        )
        # An option beats the setting.
        options = ServerOptions.from_settings(**{field: override})
        assert getattr(options, field) == expected.get(field, override)
        # None means "option not given": the setting stays.
        options = ServerOptions.from_settings(**{field: None})
        assert getattr(options, field) == setting_expected.get(field, from_setting)


@override_settings(FTPSERVER_PASSIVE_PORTS="bad")
def test_good_option_hides_a_bad_setting():
    assert ServerOptions.from_settings(passive_ports="30000-30002").passive_ports == [
        30000,
        30001,
        30002,
    ]
    with pytest.raises(OptionError) as info:
        ServerOptions.from_settings()
    assert info.value.name == "PASSIVE_PORTS"
    assert "'bad'" in info.value.message


def test_bad_option_is_reported_even_with_a_good_setting():
    with override_settings(FTPSERVER_TIMEOUT=30), pytest.raises(OptionError) as info:
        ServerOptions.from_settings(timeout="abc")
    assert info.value.name == "TIMEOUT"
    assert "'abc'" in info.value.message


def test_errors_lists_every_bad_value():
    with override_settings(
        FTPSERVER_PASSIVE_PORTS="x",
        FTPSERVER_TIMEOUT=-1,
        FTPSERVER_MASQUERADE_ADDRESS="host.example",
    ):
        names = [exc.name for exc in ServerOptions.errors()]
        assert sorted(names) == ["MASQUERADE_ADDRESS", "PASSIVE_PORTS", "TIMEOUT"]
        with pytest.raises(OptionError):
            ServerOptions.from_settings()
    assert ServerOptions.errors() == []


@pytest.mark.parametrize(
    ("overrides", "name", "quoted"),
    [
        ({"timeout": 0}, "TIMEOUT", "0"),
        ({"timeout": "1.5"}, "TIMEOUT", "'1.5'"),
        ({"max_connections": "0"}, "MAX_CONNECTIONS", "'0'"),
        ({"max_connections_per_ip": "-2"}, "MAX_CONNECTIONS_PER_IP", "'-2'"),
        ({"auth_workers": "many"}, "AUTH_WORKERS", "'many'"),
        ({"auth_failed_delay": -0.5}, "AUTH_FAILED_DELAY", "-0.5"),
        ({"max_login_attempts": 0}, "MAX_LOGIN_ATTEMPTS", "0"),
        ({"certfile": "/no/such/cert.pem"}, "CERTFILE", "'/no/such/cert.pem'"),
        ({"handler": "no.such.Class"}, "HANDLER", "'no.such.Class'"),
        (
            {"handler": "collections.OrderedDict"},
            "HANDLER",
            "'collections.OrderedDict'",
        ),
        ({"tls_min_version": "TLSv1.0"}, "TLS_MIN_VERSION", "'TLSv1.0'"),
    ],
)
def test_from_settings_refuses_bad_values(overrides, name, quoted):
    with pytest.raises(OptionError) as info:
        ServerOptions.from_settings(**overrides)
    assert info.value.name == name
    assert quoted in info.value.message


def test_auth_failed_delay_may_be_zero():
    assert ServerOptions.from_settings(auth_failed_delay=0).auth_failed_delay == 0


def test_keyfile_without_certfile(tmp_path):
    key = tmp_path / "key.pem"
    key.write_text("not really a key")
    with pytest.raises(OptionError) as info:
        ServerOptions.from_settings(keyfile=str(key))
    assert info.value.name == "CERTFILE"
    assert "no certificate file" in info.value.message


def test_options_are_frozen():
    options = ServerOptions.from_settings()
    with pytest.raises(AttributeError):
        options.port = 21
