"""Settings: flags > ROOMCAST_* environment > TOML file > defaults (contract §1, §10)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from roomcast.settings import Settings, SettingsError, load_settings


def write_toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "roomcast.toml"
    path.write_text(text)
    return path


def error_text(**kwargs: Any) -> str:
    with pytest.raises(SettingsError) as info:
        load_settings(**kwargs)
    message = str(info.value)
    assert "\n" not in message, message
    assert message
    return message


def test_defaults_are_the_contract_s() -> None:
    s = load_settings({}, {})
    assert (s.host, s.port, s.path, s.http_port) == ("127.0.0.1", 8000, "/ws", 8001)
    assert s.jwt_secret is None and s.jwt_public_key is None
    assert s.algorithms == ("HS256",)
    assert s.jwt_leeway == 0
    assert s.default_rooms == ("user:{sub}",)
    assert s.allowed_origins == ()
    assert s.max_message_bytes == 1_048_576
    assert (s.rate_per_second, s.rate_burst) == (20, 40)
    assert (s.max_connections_per_user, s.max_connections_per_ip, s.max_connections) == (
        5, 0, 100_000)
    assert (s.max_subscriptions, s.max_pending) == (100, 1000)
    assert (s.heartbeat_interval, s.heartbeat_timeout) == (25, 90)
    assert (s.history_size, s.history_ttl, s.presence_ttl) == (100, 300, 60)
    assert (s.backplane, s.shutdown_grace, s.log_format) == ("memory", 10, "text")
    assert s.node


def test_the_algorithm_default_is_rs256_with_a_public_key() -> None:
    assert Settings(jwt_public_key="key.pem").algorithms == ("RS256",)


@pytest.mark.parametrize(("name", "toml_value", "env_value", "flag_value", "expected"), [
    ("port", "9001", "9002", "9003", 9003),
    ("path", '"/from-file"', "/from-env", "/from-flag", "/from-flag"),
    ("jwt_secret", '"file-secret"', "env-secret", "flag-secret", "flag-secret"),
    ("heartbeat_interval", "1.5", "2.5", "0.25", 0.25),
    ("allowed_origins", '["https://file"]', "https://env", "https://flag",
     ("https://flag",)),
    ("max_pending", "11", "12", "13", 13),
])
def test_a_flag_beats_env_beats_file_beats_default(
    tmp_path: Path, name: str, toml_value: str, env_value: str, flag_value: str,
    expected: Any,
) -> None:
    config = write_toml(tmp_path, f"{name} = {toml_value}\n")
    env = {"ROOMCAST_" + name.upper(): env_value}
    default = getattr(Settings(), name)
    flagged = load_settings({name: flag_value}, env, config)
    from_env = load_settings({}, env, config)
    from_file = load_settings({}, {}, config)
    assert getattr(flagged, name) == expected
    assert getattr(from_env, name) != getattr(from_file, name)
    assert getattr(from_env, name) not in (expected, default)
    assert getattr(from_file, name) not in (expected, default)
    assert getattr(load_settings({}, {}), name) == default


def test_each_layer_only_overrides_the_names_it_sets(tmp_path: Path) -> None:
    config = write_toml(tmp_path, 'port = 9001\nnode = "file-node"\nmax_pending = 7\n')
    s = load_settings({"port": "9003"}, {"ROOMCAST_NODE": "env-node"}, config)
    assert (s.port, s.node, s.max_pending, s.path) == (9003, "env-node", 7, "/ws")


def test_a_flag_of_none_is_unset() -> None:
    s = load_settings({"port": None}, {"ROOMCAST_PORT": "9002"})
    assert s.port == 9002


def test_the_config_file_can_come_from_roomcast_config(tmp_path: Path) -> None:
    config = write_toml(tmp_path, "max_subscriptions = 3\n")
    s = load_settings({}, {"ROOMCAST_CONFIG": str(config)})
    assert s.max_subscriptions == 3


def test_lists_in_the_environment_are_comma_separated() -> None:
    s = load_settings({}, {"ROOMCAST_ALLOWED_ORIGINS": "https://a.example, https://b.example",
                           "ROOMCAST_DEFAULT_ROOMS": "user:{sub},lobby",
                           "ROOMCAST_JWT_ALGORITHMS": "HS256,HS512"})
    assert s.allowed_origins == ("https://a.example", "https://b.example")
    assert s.default_rooms == ("user:{sub}", "lobby")
    assert s.jwt_algorithms == ("HS256", "HS512")


def test_lists_in_toml_are_arrays(tmp_path: Path) -> None:
    config = write_toml(tmp_path, 'allowed_origins = ["https://a", "https://b"]\n')
    assert load_settings({}, {}, config).allowed_origins == ("https://a", "https://b")


def test_environment_variables_of_other_names_are_ignored() -> None:
    s = load_settings({}, {"ROOMCAST_NOT_A_SETTING": "1", "PORT": "1"})
    assert s.port == 8000


def test_fractional_seconds_are_allowed() -> None:
    s = load_settings({}, {"ROOMCAST_HEARTBEAT_INTERVAL": "0.05",
                           "ROOMCAST_HEARTBEAT_TIMEOUT": "0.2",
                           "ROOMCAST_SHUTDOWN_GRACE": "0.5"})
    assert (s.heartbeat_interval, s.heartbeat_timeout, s.shutdown_grace) == (0.05, 0.2, 0.5)


@pytest.mark.parametrize(("env", "name"), [
    ({"ROOMCAST_PORT": "eighty"}, "port"),
    ({"ROOMCAST_PORT": "70000"}, "port"),
    ({"ROOMCAST_MAX_PENDING": "0"}, "max_pending"),
    ({"ROOMCAST_HEARTBEAT_INTERVAL": "soon"}, "heartbeat_interval"),
    ({"ROOMCAST_RATE_BURST": "-1"}, "rate_burst"),
    ({"ROOMCAST_MAX_CONNECTIONS_PER_IP": "-3"}, "max_connections_per_ip"),
    ({"ROOMCAST_LOG_FORMAT": "xml"}, "log_format"),
    ({"ROOMCAST_BACKPLANE": "postgres://x"}, "backplane"),
    ({"ROOMCAST_JWT_ALGORITHMS": "HS256,none"}, "jwt_algorithms"),
    ({"ROOMCAST_PATH": "ws"}, "path"),
])
def test_a_bad_environment_value_is_a_one_line_error_naming_the_setting(
    env: dict[str, str], name: str
) -> None:
    assert name in error_text(flags={}, environ=env)


@pytest.mark.parametrize(("text", "name"), [
    ('port = "x"\n', "port"),
    ("port = 80.5\n", "port"),
    ("port = true\n", "port"),
    ('heartbeat_timeout = "slow"\n', "heartbeat_timeout"),
    ("allowed_origins = [1, 2]\n", "allowed_origins"),
    ("jwt_secret = 5\n", "jwt_secret"),
])
def test_a_bad_file_value_is_a_one_line_error_naming_the_setting(
    tmp_path: Path, text: str, name: str
) -> None:
    assert name in error_text(flags={}, environ={}, config=write_toml(tmp_path, text))


def test_a_bad_flag_value_is_a_one_line_error_naming_the_setting() -> None:
    assert "max_subscriptions" in error_text(flags={"max_subscriptions": "many"}, environ={})


def test_an_unknown_toml_key_is_refused(tmp_path: Path) -> None:
    config = write_toml(tmp_path, "port = 9000\nheartbeat = 5\n")
    message = error_text(flags={}, environ={}, config=config)
    assert "heartbeat" in message and "unknown" in message


def test_a_toml_table_is_refused_as_an_unknown_key(tmp_path: Path) -> None:
    config = write_toml(tmp_path, "[server]\nport = 9000\n")
    assert "server" in error_text(flags={}, environ={}, config=config)


def test_a_missing_config_file_is_a_one_line_error(tmp_path: Path) -> None:
    message = error_text(flags={}, environ={}, config=tmp_path / "nope.toml")
    assert "nope.toml" in message


def test_invalid_toml_is_a_one_line_error(tmp_path: Path) -> None:
    config = write_toml(tmp_path, "port = = 3\n")
    assert "TOML" in error_text(flags={}, environ={}, config=config)


def test_an_unknown_flag_name_is_refused() -> None:
    assert "colour" in error_text(flags={"colour": "blue"}, environ={})


# ------------------------------------------------------------------ one text for help and docs
def test_every_setting_has_a_meaning_and_a_default_in_one_place() -> None:
    from roomcast.settings import DOCS, FIELDS

    assert list(DOCS) == list(FIELDS)
    assert all(default and meaning for default, meaning in DOCS.values())


def test_docs_configuration_holds_the_reference_table_verbatim() -> None:
    from roomcast.settings import reference_table

    docs = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text()
    assert reference_table() in docs, (
        "docs/configuration.md's table differs from roomcast.settings.DOCS: paste the "
        "output of `python -c 'from roomcast.settings import reference_table as t; "
        "print(t())'` over it")


def test_serve_help_gives_each_setting_its_meaning_and_default(
    capsys: pytest.CaptureFixture[str]
) -> None:
    from roomcast.cli import main
    from roomcast.settings import FIELDS, flag, help_text

    with pytest.raises(SystemExit) as exited:
        main(["serve", "--help"])
    assert exited.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for name in FIELDS:
        assert f"{flag(name)} VALUE {' '.join(help_text(name).split())}" in text, name


# ------------------------------------------------------------------ errors
def test_settings_errors_are_roomcast_errors() -> None:
    from roomcast.cli_client import UsageError
    from roomcast.errors import RoomcastError

    assert issubclass(SettingsError, RoomcastError)
    assert issubclass(UsageError, RoomcastError)


def test_http_port_equal_to_port_is_refused_and_0_for_both_is_not() -> None:
    message = error_text(flags={"port": "9000", "http_port": "9000"}, environ={})
    assert "http_port" in message and "--http-port 9001" in message
    assert load_settings({"port": "0", "http_port": "0"}, {}).port == 0
