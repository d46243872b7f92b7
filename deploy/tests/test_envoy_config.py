"""The Envoy config rendered from deploy/settings.py, checked by Envoy itself."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from render import render_envoy, write_envoy
from settings import EDGE_GRPC_SERVICES, Address, SettingsError, StackSettings
from support import ENVOY, RENDER, ProcessGroup, admin_get, envoy_ready, free_port, wait_for

CUSTOM_ENV = {
    "NUELL_EDGE_HTTP_PORT": "18080",
    "NUELL_EDGE_ADMIN_PORT": "19901",
    "NUELL_GATEWAY_ADDR": "127.0.0.1:15051",
    "NUELL_CORS_ALLOWED_ORIGINS": "https://nue-japan.com, https://app.nue-japan.com/",
}


def envoy_validate(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ENVOY), "--mode", "validate", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("environ", [{}, CUSTOM_ENV], ids=["defaults", "overridden"])
def test_envoy_accepts_the_rendered_config(tmp_path: Path, environ: dict[str, str]) -> None:
    config = write_envoy(StackSettings.from_env(environ), tmp_path / "envoy.yaml")

    result = envoy_validate(config)

    assert result.returncode == 0, result.stdout + result.stderr
    assert f"configuration '{config}' OK" in result.stdout + result.stderr


def test_envoy_rejects_a_broken_config(tmp_path: Path) -> None:
    # Proves the validation above can fail: same file, one route pointing nowhere.
    text = render_envoy(StackSettings()).replace("cluster: py_gateway", "cluster: nowhere", 1)
    config = tmp_path / "envoy.yaml"
    config.write_text(text)

    assert envoy_validate(config).returncode != 0


def test_overrides_reach_the_rendered_config() -> None:
    text = render_envoy(StackSettings.from_env(CUSTOM_ENV))

    assert 'socket_address: { address: "0.0.0.0", port_value: 18080 }' in text
    assert 'socket_address: { address: "127.0.0.1", port_value: 19901 }' in text
    assert 'socket_address: { address: "127.0.0.1", port_value: 15051 }' in text
    assert '- exact: "https://nue-japan.com"' in text
    assert '- exact: "https://app.nue-japan.com"' in text
    assert "localhost:3000" not in text
    for default in ("8080", "9901", "50051"):
        assert f"port_value: {default} " not in text


def test_render_cli_writes_the_file(tmp_path: Path) -> None:
    out = tmp_path / "nested" / "envoy.yaml"
    env = {"PATH": "/usr/bin:/bin", **CUSTOM_ENV}

    result = subprocess.run(
        [sys.executable, str(RENDER), "envoy", "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert out.read_text() == render_envoy(StackSettings.from_env(CUSTOM_ENV))


def test_render_cli_names_a_bad_variable_in_one_line(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "NUELL_CORS_ALLOWED_ORIGINS": "*"}

    result = subprocess.run(
        [sys.executable, str(RENDER), "envoy", "--out", str(tmp_path / "envoy.yaml")],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )

    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1
    assert "NUELL_CORS_ALLOWED_ORIGINS" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "envoy.yaml").exists()


# --- the config as a running Envoy loaded it -----------------------------------


@pytest.fixture(scope="module")
def loaded_settings() -> StackSettings:
    """CUSTOM_ENV on free ports, so a running Envoy can load it."""
    return dataclasses.replace(
        StackSettings.from_env(CUSTOM_ENV),
        edge_http=Address("0.0.0.0", free_port()),
        edge_admin=Address("127.0.0.1", free_port()),
    )


@pytest.fixture(scope="module")
def config_dump(
    loaded_settings: StackSettings,
    module_processes: ProcessGroup,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Any]:
    """The rendered config as a running Envoy loaded it (admin /config_dump)."""
    admin_port = loaded_settings.edge_admin.port
    config = write_envoy(loaded_settings, tmp_path_factory.mktemp("envoy") / "envoy.yaml")
    envoy = module_processes.start(
        "envoy", [ENVOY, "-c", config, "--disable-hot-restart", "--log-level", "warning"]
    )
    wait_for(
        lambda: envoy_ready(admin_port) or envoy.popen.poll() is not None,
        timeout=60,
        what="Envoy /ready",
    )
    assert envoy.popen.poll() is None, envoy.tail()
    reply = admin_get(admin_port, "/config_dump")
    assert reply is not None, "admin did not answer"
    assert reply[0] == 200, reply
    dump: dict[str, Any] = json.loads(reply[1])
    return dump


def _section(dump: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(c for c in dump["configs"] if c["@type"].endswith(f".{kind}"))


def _routes(dump: dict[str, Any]) -> list[dict[str, Any]]:
    route_config = _section(dump, "RoutesConfigDump")["static_route_configs"][0]["route_config"]
    (virtual_host,) = route_config["virtual_hosts"]
    routes: list[dict[str, Any]] = virtual_host["routes"]
    return routes


def _connection_manager(dump: dict[str, Any]) -> dict[str, Any]:
    (listener,) = _section(dump, "ListenersConfigDump")["static_listeners"]
    (chain,) = listener["listener"]["filter_chains"]
    (hcm,) = chain["filters"]
    config: dict[str, Any] = hcm["typed_config"]
    return config


def test_admin_listens_on_loopback_only(
    config_dump: dict[str, Any], loaded_settings: StackSettings
) -> None:
    admin = _section(config_dump, "BootstrapConfigDump")["bootstrap"]["admin"]["address"]

    assert admin["socket_address"]["address"] == "127.0.0.1"
    assert admin["socket_address"]["port_value"] == loaded_settings.edge_admin.port


def test_admin_must_be_loopback() -> None:
    with pytest.raises(SettingsError, match="loopback"):
        StackSettings(edge_admin=Address("0.0.0.0", 9901))


def test_only_nuell_services_and_health_reach_the_gateway(config_dump: dict[str, Any]) -> None:
    routed = {
        route["match"]["prefix"]
        for route in _routes(config_dump)
        if route.get("route", {}).get("cluster") == "py_gateway"
    }

    assert routed == {f"/{service}/" for service in EDGE_GRPC_SERVICES}
    assert not any("reflection" in prefix for prefix in routed)


def test_everything_else_is_answered_by_envoy(config_dump: dict[str, Any]) -> None:
    *_, grpc_fallback, http_fallback = _routes(config_dump)

    assert grpc_fallback["match"] == {"prefix": "/", "grpc": {}}
    assert grpc_fallback["direct_response"]["status"] == 200
    headers = {
        h["header"]["key"]: h["header"]["value"] for h in grpc_fallback["response_headers_to_add"]
    }
    assert headers["grpc-status"] == "12"  # UNIMPLEMENTED
    assert http_fallback["match"] == {"prefix": "/"}
    assert http_fallback["direct_response"]["status"] == 404


def test_cors_allowlist_is_exact(config_dump: dict[str, Any]) -> None:
    route_config = _section(config_dump, "RoutesConfigDump")["static_route_configs"][0][
        "route_config"
    ]
    policy = route_config["virtual_hosts"][0]["typed_per_filter_config"]["envoy.filters.http.cors"]

    assert policy["allow_origin_string_match"] == [
        {"exact": "https://nue-japan.com"},
        {"exact": "https://app.nue-japan.com"},
    ]
    assert policy["allow_methods"] == "GET,POST,PUT,DELETE,OPTIONS"
    assert set(policy["allow_headers"].split(",")) == {
        "authorization",
        "content-type",
        "x-grpc-web",
        "x-user-agent",
        "grpc-timeout",
    }
    assert set(policy["expose_headers"].split(",")) == {
        "grpc-status",
        "grpc-message",
        "grpc-status-details-bin",
    }
    assert int(policy["max_age"]) > 0
    assert policy["forward_not_matching_preflights"] is False


def test_filters_and_proxy_headers(config_dump: dict[str, Any]) -> None:
    hcm = _connection_manager(config_dump)
    filters = [f["name"] for f in hcm["http_filters"]]

    assert filters == [
        "envoy.filters.http.grpc_web",
        "envoy.filters.http.cors",
        "envoy.filters.http.router",
    ]
    assert hcm["server_header_transformation"] == "PASS_THROUGH"
    assert hcm["http_filters"][-1]["typed_config"]["suppress_envoy_headers"] is True


def test_gateway_is_reached_over_http2(config_dump: dict[str, Any]) -> None:
    (cluster,) = _section(config_dump, "ClustersConfigDump")["static_clusters"]
    options = cluster["cluster"]["typed_extension_protocol_options"][
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
    ]

    assert "http2_protocol_options" in options["explicit_http_config"]


# --- settings -----------------------------------------------------------------


def test_defaults_are_the_documented_ports() -> None:
    settings = StackSettings.from_env({})

    assert str(settings.edge_http) == "0.0.0.0:8080"
    assert str(settings.edge_https) == "0.0.0.0:8443"
    assert str(settings.edge_admin) == "127.0.0.1:9901"
    assert str(settings.gateway) == "127.0.0.1:50051"
    assert str(settings.compute) == "127.0.0.1:50052"
    assert settings.web.port == 3000
    assert settings.cors_allowed_origins == ("http://localhost:3000", "http://127.0.0.1:3000")


def test_default_allowlist_follows_the_web_port() -> None:
    settings = StackSettings.from_env({"NUELL_WEB_PORT": "5173"})

    assert settings.cors_allowed_origins == ("http://localhost:5173", "http://127.0.0.1:5173")


def test_addresses_parse_ipv6_and_port_zero() -> None:
    settings = StackSettings.from_env(
        {"NUELL_GATEWAY_ADDR": "[::1]:0", "NUELL_COMPUTE_ADDR": "0.0.0.0:7000"}
    )

    assert settings.gateway == Address("::1", 0)
    assert str(settings.gateway) == "[::1]:0"
    assert settings.compute.connect_target == "127.0.0.1:7000"


@pytest.mark.parametrize(
    ("environ", "names"),
    [
        ({"NUELL_EDGE_HTTP_PORT": "http"}, "NUELL_EDGE_HTTP_PORT"),
        ({"NUELL_EDGE_ADMIN_PORT": "0"}, "NUELL_EDGE_ADMIN_PORT"),
        ({"NUELL_EDGE_HTTPS_PORT": "70000"}, "NUELL_EDGE_HTTPS_PORT"),
        ({"NUELL_GATEWAY_ADDR": "50051"}, "NUELL_GATEWAY_ADDR"),
        ({"NUELL_COMPUTE_ADDR": "::1:50052"}, "NUELL_COMPUTE_ADDR"),
        ({"NUELL_EDGE_ADMIN_PORT": "50051"}, "NUELL_GATEWAY_ADDR"),
        ({"NUELL_CORS_ALLOWED_ORIGINS": "*"}, "NUELL_CORS_ALLOWED_ORIGINS"),
        ({"NUELL_CORS_ALLOWED_ORIGINS": "https://*.nue-japan.com"}, "NUELL_CORS_ALLOWED_ORIGINS"),
        ({"NUELL_CORS_ALLOWED_ORIGINS": "https://nue-japan.com/app"}, "NUELL_CORS_ALLOWED_ORIGINS"),
        ({"NUELL_CORS_ALLOWED_ORIGINS": "nue-japan.com"}, "NUELL_CORS_ALLOWED_ORIGINS"),
        ({"NUELL_CORS_ALLOWED_ORIGINS": "https://nue-japan.com:x"}, "NUELL_CORS_ALLOWED_ORIGINS"),
        ({"NUELL_CORS_ALLOWED_ORIGINS": " , "}, "NUELL_CORS_ALLOWED_ORIGINS"),
    ],
)
def test_bad_values_are_refused_by_name(environ: dict[str, str], names: str) -> None:
    with pytest.raises(SettingsError, match=names):
        StackSettings.from_env(environ)
