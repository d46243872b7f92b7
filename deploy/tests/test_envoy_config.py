"""The Envoy config rendered from deploy/settings.py, checked by Envoy itself."""

from __future__ import annotations

import dataclasses
import json
import string
import subprocess
import uuid
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from google.protobuf import descriptor_pb2
from nuell.auth.v1 import auth_service_pb2 as auth_pb
from nuell.auth.v1.auth_service_pb2_grpc import AuthServiceStub
from nuell.compute.v1 import compute_service_pb2 as compute_pb
from nuell.compute.v1.compute_service_pb2_grpc import ComputeServiceStub

from deploy import stack
from deploy.dev_tls import DevCertificate
from deploy.launcher import Launcher, free_port, http_get
from deploy.render import render_envoy, write_envoy
from deploy.settings import (
    BARE_CONTRACT,
    EDGE_GRPC_SERVICES,
    EDGE_RATE_LIMITED_METHODS,
    EDGE_RETRYABLE_METHODS,
    EDGE_SECURITY_HEADERS,
    EDGE_STREAMING_METHODS,
    Address,
    SettingsError,
    StackSettings,
)
from deploy.tests.support import (
    CORS_ALLOW_HEADERS_PINNED,
    ENVOY,
    RENDER,
    REPO,
    Backend,
    admin_get,
    backend_settings,
    base_env,
    edge_settings,
    mark_verified,
    otlp_collector,
    start_envoy,
)

CUSTOM_ENV = {
    "NUELL_EDGE_HTTP_PORT": "18080",
    "NUELL_EDGE_HTTPS_PORT": "18443",
    "NUELL_EDGE_ADMIN_PORT": "19901",
    "NUELL_GATEWAY_ADDR": "127.0.0.1:15051",
    "NUELL_CORS_ALLOWED_ORIGINS": "https://nue-japan.com, https://app.nue-japan.com/",
    "NUELL_EDGE_AUTH_RATE_PER_MINUTE": "30",
    "NUELL_EDGE_AUTH_BURST": "7",
    "NUELL_EDGE_MAX_REQUEST_BYTES": "65536",
    "NUELL_EDGE_TRUSTED_PROXY_HOPS": "1",
}


@pytest.fixture(scope="module")
def data_dir(dev_certificate: DevCertificate) -> Path:
    """A data folder holding the development certificate, as `make run` leaves it."""
    return dev_certificate.cert.parent.parent


def with_data(environ: dict[str, str], data_dir: Path) -> dict[str, str]:
    return {**environ, "NUELL_DATA_DIR": str(data_dir)}


def envoy_validate(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ENVOY), "--mode", "validate", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    "environ",
    [
        {},
        CUSTOM_ENV,
        {"NUELL_EDGE_PLAINTEXT": "false"},
        {"NUELL_OTLP_ENDPOINT": "http://127.0.0.1:4317"},
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel-collector.monitoring:4317"},
    ],
    ids=["defaults", "overridden", "tls-only", "tracing", "tracing-by-name"],
)
def test_envoy_accepts_the_rendered_config(
    tmp_path: Path, data_dir: Path, environ: dict[str, str]
) -> None:
    settings = StackSettings.from_env(with_data(environ, data_dir))
    config = write_envoy(settings, tmp_path / "envoy.yaml")

    result = envoy_validate(config)

    assert result.returncode == 0, result.stdout + result.stderr
    assert f"configuration '{config}' OK" in result.stdout + result.stderr


def test_envoy_rejects_a_broken_config(tmp_path: Path, data_dir: Path) -> None:
    # Proves the validation above can fail: same file, one route pointing nowhere.
    settings = StackSettings.from_env(with_data({}, data_dir))
    text = render_envoy(settings).replace("cluster: py_gateway", "cluster: nowhere", 1)
    config = tmp_path / "envoy.yaml"
    config.write_text(text)

    assert envoy_validate(config).returncode != 0


def test_envoy_accepts_the_benchmarks_bare_edge(tmp_path: Path) -> None:
    # bench/bare_envoy.yaml: the router-only Envoy `make bench` compares the edge with.
    template = string.Template((REPO / "bench" / "bare_envoy.yaml").read_text())
    config = tmp_path / "bare-envoy.yaml"
    config.write_text(
        template.substitute(
            admin_port=19901, listen_port=18080, gateway_host="127.0.0.1", gateway_port=15051
        )
    )

    result = envoy_validate(config)

    assert result.returncode == 0, result.stdout + result.stderr


def test_overrides_reach_the_rendered_config(data_dir: Path) -> None:
    text = render_envoy(StackSettings.from_env(with_data(CUSTOM_ENV, data_dir)))

    assert 'socket_address: { address: "0.0.0.0", port_value: 18080 }' in text
    assert 'socket_address: { address: "0.0.0.0", port_value: 18443 }' in text
    assert 'socket_address: { address: "127.0.0.1", port_value: 19901 }' in text
    assert 'socket_address: { address: "127.0.0.1", port_value: 15051 }' in text
    assert '- exact: "https://nue-japan.com"' in text
    assert '- exact: "https://app.nue-japan.com"' in text
    assert "localhost:3000" not in text
    assert f'"{data_dir / "tls" / "edge.crt"}"' in text
    assert 'max_tokens: 7, tokens_per_fill: 1, fill_interval: "2.000s"' in text
    assert "max_request_bytes: 65536" in text
    assert "xff_num_trusted_hops: 1" in text
    for default in ("8080", "8443", "9901", "50051"):
        assert f"port_value: {default} " not in text


def test_plaintext_listener_can_be_turned_off(data_dir: Path) -> None:
    environ = with_data({"NUELL_EDGE_PLAINTEXT": "0"}, data_dir)

    text = render_envoy(StackSettings.from_env(environ))

    assert "name: edge_https" in text
    assert "name: edge_http\n" not in text
    assert "port_value: 8080" not in text


def render_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`python -m deploy.render ...` as a user runs it, from the repository root."""
    return subprocess.run(
        [*RENDER, *args], capture_output=True, text=True, env=env, cwd=REPO, timeout=60, check=False
    )


def test_render_cli_writes_the_file(tmp_path: Path, data_dir: Path) -> None:
    out = tmp_path / "nested" / "envoy.yaml"
    env = {"PATH": "/usr/bin:/bin", **with_data(CUSTOM_ENV, data_dir)}

    result = render_cli("envoy", "--out", str(out), env=env)

    assert result.returncode == 0, result.stderr
    assert out.read_text() == render_envoy(StackSettings.from_env(env))


def test_render_cli_names_a_bad_variable_in_one_line(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "NUELL_CORS_ALLOWED_ORIGINS": "*"}

    result = render_cli("envoy", "--out", str(tmp_path / "envoy.yaml"), env=env)

    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1
    assert "NUELL_CORS_ALLOWED_ORIGINS" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "envoy.yaml").exists()


# --- the config as a running Envoy loaded it -----------------------------------


@pytest.fixture(scope="module")
def loaded_settings(data_dir: Path) -> StackSettings:
    """CUSTOM_ENV on free ports, so a running Envoy can load it."""
    return dataclasses.replace(
        StackSettings.from_env(with_data(CUSTOM_ENV, data_dir)),
        edge_http=Address("0.0.0.0", free_port()),
        edge_https=Address("0.0.0.0", free_port()),
        edge_admin=Address("127.0.0.1", free_port()),
    )


@pytest.fixture(scope="module")
def config_dump(
    loaded_settings: StackSettings,
    module_processes: Launcher,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Any]:
    """The rendered config as a running Envoy loaded it (admin /config_dump)."""
    admin_port = loaded_settings.edge_admin.port
    config = tmp_path_factory.mktemp("envoy") / "envoy.yaml"
    envoy = stack.envoy_service(loaded_settings, base_env(), config=config)
    # No gateway behind this one: ready is admin's /ready alone.
    module_processes.start(
        dataclasses.replace(envoy, ready=http_get(f"http://127.0.0.1:{admin_port}/ready"))
    )
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


def _listeners(dump: dict[str, Any]) -> dict[str, dict[str, Any]]:
    static = _section(dump, "ListenersConfigDump")["static_listeners"]
    return {item["listener"]["name"]: item["listener"] for item in static}


def _connection_managers(dump: dict[str, Any]) -> list[dict[str, Any]]:
    """The HTTP connection manager of each listener (plaintext, TLS)."""
    managers = []
    for listener in _listeners(dump).values():
        (chain,) = listener["filter_chains"]
        (hcm,) = chain["filters"]
        managers.append(hcm["typed_config"])
    return managers


def _connection_manager(dump: dict[str, Any]) -> dict[str, Any]:
    first, *others = _connection_managers(dump)
    # Both listeners are the same edge; only the stat prefix tells them apart.
    for other in others:
        assert {**other, "stat_prefix": ""} == {**first, "stat_prefix": ""}
    return first


def _filter(hcm: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = [f for f in hcm["http_filters"] if f["name"] == name]
    config: dict[str, Any] = found["typed_config"]
    return config


def _route(dump: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = [route for route in _routes(dump) if route["name"] == name]
    return found


def _seconds(duration: str) -> float:
    return float(duration.removesuffix("s"))


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
    forwarding = [r for r in _routes(config_dump) if r.get("route", {}).get("cluster")]
    # Browsers' preflights, answered by the CORS filter, which only acts on a
    # forwarding route: OPTIONS from a page with Access-Control-Request-Method.
    preflight = forwarding[0]
    assert preflight["name"] == "preflight"
    assert {h["name"] for h in preflight["match"]["headers"]} == {
        ":method",
        "origin",
        "access-control-request-method",
    }
    routes = [r for r in forwarding[1:] if r["route"]["cluster"] == "py_gateway"]
    prefixes = {r["match"]["prefix"] for r in routes if "prefix" in r["match"]}
    paths = {r["match"]["path"] for r in routes if "path" in r["match"]}

    assert prefixes == {f"/{service}/" for service in EDGE_GRPC_SERVICES}
    assert all(any(path.startswith(prefix) for prefix in prefixes) for path in paths)
    assert len(routes) == len(prefixes) + len(paths)  # nothing matched any other way
    assert not any("reflection" in route["match"].get("prefix", "") for route in routes)


def test_the_gateway_is_the_only_upstream(config_dump: dict[str, Any]) -> None:
    clusters = _section(config_dump, "ClustersConfigDump")["static_clusters"]

    # rust_compute is reached only by the gateway, never from the edge.
    assert [c["cluster"]["name"] for c in clusters] == ["py_gateway"]


def test_tls_listener(config_dump: dict[str, Any], loaded_settings: StackSettings) -> None:
    listeners = _listeners(config_dump)
    https = listeners["edge_https"]
    (chain,) = https["filter_chains"]
    tls = chain["transport_socket"]["typed_config"]["common_tls_context"]

    assert set(listeners) == {"edge_http", "edge_https"}
    assert https["address"]["socket_address"]["port_value"] == loaded_settings.edge_https.port
    assert tls["tls_params"]["tls_minimum_protocol_version"] == "TLSv1_2"
    assert tls["alpn_protocols"] == ["h2", "http/1.1"]
    (certificate,) = tls["tls_certificates"]
    assert certificate["certificate_chain"]["filename"] == str(loaded_settings.edge_tls_cert)


def test_credentials_are_rate_limited_per_client(
    config_dump: dict[str, Any], loaded_settings: StackSettings
) -> None:
    limited = [
        route
        for route in _routes(config_dump)
        if "envoy.filters.http.local_ratelimit" in route.get("typed_per_filter_config", {})
    ]

    assert sorted(r["match"]["path"] for r in limited) == sorted(
        f"/{m}" for m in EDGE_RATE_LIMITED_METHODS
    )
    for route in limited:
        policy = route["typed_per_filter_config"]["envoy.filters.http.local_ratelimit"]
        assert policy["rate_limits"] == [{"actions": [{"remote_address": {}}]}]
        (descriptor,) = policy["descriptors"]
        assert descriptor["entries"] == [{"key": "remote_address"}]  # any address, one each
        bucket = descriptor["token_bucket"]
        assert bucket["max_tokens"] == loaded_settings.auth_burst == 7
        assert bucket["tokens_per_fill"] == 1
        assert _seconds(bucket["fill_interval"]) == 60 / loaded_settings.auth_rate_per_minute
        assert policy["rate_limited_as_resource_exhausted"] is True
        assert policy["always_consume_default_token_bucket"] is False


def test_only_reads_are_retried(config_dump: dict[str, Any]) -> None:
    retried = {
        route["match"]["path"]
        for route in _routes(config_dump)
        if "retry_policy" in route.get("route", {})
    }

    assert retried == {f"/{method}" for method in EDGE_RETRYABLE_METHODS}
    assert all(m.rpartition("/")[2].startswith(("Get", "List", "Search", "Check")) for m in retried)
    policy = _route(config_dump, EDGE_RETRYABLE_METHODS[0])["route"]["retry_policy"]
    assert set(policy["retry_on"].split(",")) <= {
        "unavailable",
        "reset",
        "connect-failure",
        "refused-stream",
    }
    assert policy["num_retries"] == 2


def test_every_route_has_a_deadline(config_dump: dict[str, Any]) -> None:
    for route in _routes(config_dump):
        action = route.get("route")
        if action is None:  # answered by Envoy itself
            continue
        if route["name"] in EDGE_STREAMING_METHODS:
            assert _seconds(action["timeout"]) == 0, route["name"]
            assert 0 < _seconds(action["idle_timeout"]) <= 600
            assert 0 < _seconds(action["max_stream_duration"]["max_stream_duration"]) <= 3600
        else:
            assert 0 < _seconds(action["timeout"]) <= 30, route["name"]
            assert _seconds(action["max_stream_duration"]["grpc_timeout_header_max"]) <= 30


def test_connection_limits_and_timeouts(config_dump: dict[str, Any]) -> None:
    hcm = _connection_manager(config_dump)

    assert _seconds(hcm["request_headers_timeout"]) == 10
    assert 0 < _seconds(hcm["stream_idle_timeout"]) <= 300
    assert 0 < _seconds(hcm["common_http_protocol_options"]["idle_timeout"]) <= 3600
    assert hcm["common_http_protocol_options"]["headers_with_underscores_action"] == ("DROP_HEADER")
    assert hcm["max_request_headers_kb"] <= 60
    assert hcm["http2_protocol_options"]["max_concurrent_streams"] == 100
    assert _filter(hcm, "envoy.filters.http.buffer")["max_request_bytes"] == 65536
    for listener in _listeners(config_dump).values():
        assert listener["per_connection_buffer_limit_bytes"] == 32768


def test_streams_are_not_buffered(config_dump: dict[str, Any]) -> None:
    for method in EDGE_STREAMING_METHODS:
        per_route = _route(config_dump, method)["typed_per_filter_config"]
        assert per_route["envoy.filters.http.buffer"]["disabled"] is True


def test_gateway_upstream_is_guarded(config_dump: dict[str, Any]) -> None:
    (cluster,) = _section(config_dump, "ClustersConfigDump")["static_clusters"]
    gateway = cluster["cluster"]

    (thresholds,) = gateway["circuit_breakers"]["thresholds"]
    assert thresholds["max_connections"] == thresholds["max_requests"] == 1024
    assert thresholds["max_pending_requests"] == 1024
    assert thresholds["retry_budget"]["budget_percent"]["value"] == 20
    assert gateway["outlier_detection"]["consecutive_gateway_failure"] == 5
    (check,) = gateway["health_checks"]
    assert "grpc_health_check" in check
    assert _seconds(check["interval"]) <= 10


def test_security_headers_on_every_response(config_dump: dict[str, Any]) -> None:
    hcm = _connection_manager(config_dump)
    mutations = _filter(hcm, "envoy.filters.http.header_mutation")["mutations"][
        "response_mutations"
    ]
    added = {
        m["append"]["header"]["key"]: m["append"]["header"]["value"]
        for m in mutations
        if "append" in m
    }

    # First filter: it sees every response, including other filters' replies.
    assert hcm["http_filters"][0]["name"] == "envoy.filters.http.header_mutation"
    assert added == dict(EDGE_SECURITY_HEADERS)
    assert {"remove": "server"} in mutations
    assert {"remove_on_match": {"key_matcher": {"prefix": "x-envoy-"}}} in mutations
    # Envoy's own replies (written before any filter runs) carry them too.
    for mapper in hcm["local_reply_config"]["mappers"]:
        headers = {h["header"]["key"]: h["header"]["value"] for h in mapper["headers_to_add"]}
        assert dict(EDGE_SECURITY_HEADERS).items() <= headers.items()


def test_unlisted_origins_are_refused_before_cors(config_dump: dict[str, Any]) -> None:
    hcm = _connection_manager(config_dump)
    rules = _filter(hcm, "envoy.filters.http.rbac")["rules"]
    (policy,) = rules["policies"].values()
    present, allowed = policy["principals"][0]["and_ids"]["ids"]

    assert rules["action"] == "DENY"
    assert present == {"header": {"name": "origin", "present_match": True}}
    assert [i["header"]["string_match"]["exact"] for i in allowed["not_id"]["or_ids"]["ids"]] == [
        "https://nue-japan.com",
        "https://app.nue-japan.com",
    ]


def test_everything_else_is_answered_by_envoy(config_dump: dict[str, Any]) -> None:
    *_, grpc_fallback, http_fallback = _routes(config_dump)
    no_buffering = {"disabled": True}

    assert grpc_fallback["match"] == {"prefix": "/", "grpc": {}}
    assert grpc_fallback["direct_response"]["status"] == 200
    headers = {
        h["header"]["key"]: h["header"]["value"] for h in grpc_fallback["response_headers_to_add"]
    }
    assert headers["grpc-status"] == "12"  # UNIMPLEMENTED
    assert http_fallback["match"] == {"prefix": "/"}
    assert http_fallback["direct_response"]["status"] == 404
    # Answered at once, even to a caller that keeps its request open.
    for fallback in (grpc_fallback, http_fallback):
        per_route = fallback["typed_per_filter_config"]["envoy.filters.http.buffer"]
        assert no_buffering.items() <= per_route.items()


def test_cors_allowlist_is_exact(config_dump: dict[str, Any]) -> None:
    route_config = _section(config_dump, "RoutesConfigDump")["static_route_configs"][0][
        "route_config"
    ]
    policy = route_config["virtual_hosts"][0]["typed_per_filter_config"]["envoy.filters.http.cors"]

    assert policy["allow_origin_string_match"] == [
        {"exact": "https://nue-japan.com"},
        {"exact": "https://app.nue-japan.com"},
    ]
    assert policy["allow_methods"] == "GET,POST,PUT,PATCH,DELETE,OPTIONS"
    assert policy["allow_headers"] == CORS_ALLOW_HEADERS_PINNED
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
        "envoy.filters.http.header_mutation",
        "envoy.filters.http.rbac",
        "envoy.filters.http.lua",
        "envoy.filters.http.connect_grpc_bridge",
        "envoy.filters.http.grpc_web",
        "envoy.filters.http.grpc_json_transcoder",
        "envoy.filters.http.cors",
        "envoy.filters.http.local_ratelimit",
        "envoy.filters.http.buffer",
        "envoy.filters.http.router",
    ]
    assert hcm["use_remote_address"] is True
    assert hcm["xff_num_trusted_hops"] == 1
    assert hcm["server_header_transformation"] == "PASS_THROUGH"
    assert hcm["http_filters"][-1]["typed_config"]["suppress_envoy_headers"] is True


def test_rest_transcoding_covers_every_routed_service_with_http_paths(
    config_dump: dict[str, Any],
) -> None:
    (transcoder,) = [
        f["typed_config"]
        for f in _connection_manager(config_dump)["http_filters"]
        if f["name"] == "envoy.filters.http.grpc_json_transcoder"
    ]

    assert transcoder["services"] == [
        "nuell.auth.v1.AuthService",
        "nuell.posts.v1.PostService",
        "nuell.sessions.v1.SessionService",
        "nuell.users.v1.UserService",
    ]
    assert transcoder["convert_grpc_status"] is True
    assert transcoder["request_validation_options"]["reject_unknown_query_parameters"] is True


def test_gateway_is_reached_over_http2(config_dump: dict[str, Any]) -> None:
    (cluster,) = _section(config_dump, "ClustersConfigDump")["static_clusters"]
    options = cluster["cluster"]["typed_extension_protocol_options"][
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
    ]

    assert "http2_protocol_options" in options["explicit_http_config"]


# --- settings -----------------------------------------------------------------


def test_defaults_are_the_documented_ports() -> None:
    settings = StackSettings.from_env({})

    assert settings.edge_plaintext is True
    assert settings.auth_rate_per_minute == 10
    assert settings.auth_burst == 5
    assert settings.max_request_bytes == 4 * 1024 * 1024
    assert settings.trusted_proxy_hops == 0
    assert settings.uses_dev_certificate
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
        ({"NUELL_EDGE_AUTH_RATE_PER_MINUTE": "0"}, "NUELL_EDGE_AUTH_RATE_PER_MINUTE"),
        ({"NUELL_EDGE_AUTH_RATE_PER_MINUTE": "5000"}, "NUELL_EDGE_AUTH_RATE_PER_MINUTE"),
        ({"NUELL_EDGE_AUTH_RATE_PER_MINUTE": "ten"}, "NUELL_EDGE_AUTH_RATE_PER_MINUTE"),
        ({"NUELL_EDGE_AUTH_BURST": "0"}, "NUELL_EDGE_AUTH_BURST"),
        ({"NUELL_EDGE_MAX_REQUEST_BYTES": "12"}, "NUELL_EDGE_MAX_REQUEST_BYTES"),
        ({"NUELL_EDGE_TRUSTED_PROXY_HOPS": "-1"}, "NUELL_EDGE_TRUSTED_PROXY_HOPS"),
        ({"NUELL_EDGE_PLAINTEXT": "maybe"}, "NUELL_EDGE_PLAINTEXT"),
        ({"NUELL_EDGE_WORKERS": "0"}, "NUELL_EDGE_WORKERS"),
        ({"NUELL_EDGE_WORKERS": "two"}, "NUELL_EDGE_WORKERS"),
        ({"NUELL_OTLP_ENDPOINT": "https://collector:4317"}, "NUELL_OTLP_ENDPOINT"),
        ({"NUELL_OTLP_ENDPOINT": "http://collector"}, "NUELL_OTLP_ENDPOINT"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:0"}, "OTEL_EXPORTER_OTLP_ENDPOINT"),
    ],
)
def test_bad_values_are_refused_by_name(environ: dict[str, str], names: str) -> None:
    with pytest.raises(SettingsError, match=names):
        StackSettings.from_env(environ)


def test_tls_files_follow_the_data_folder(tmp_path: Path) -> None:
    settings = StackSettings.from_env({"NUELL_DATA_DIR": str(tmp_path)})

    assert settings.edge_tls_cert == tmp_path.resolve() / "tls" / "edge.crt"
    assert settings.edge_tls_key == tmp_path.resolve() / "tls" / "edge.key"
    assert settings.uses_dev_certificate


def test_tls_files_of_your_own(tmp_path: Path) -> None:
    environ = {
        "NUELL_EDGE_TLS_CERT": str(tmp_path / "site.pem"),
        "NUELL_EDGE_TLS_KEY": str(tmp_path / "site.key"),
    }

    settings = StackSettings.from_env(environ)

    assert settings.edge_tls_cert == tmp_path.resolve() / "site.pem"
    assert not settings.uses_dev_certificate


# --- tracing ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, None),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": " "}, None),
        ({"NUELL_OTLP_ENDPOINT": "http://127.0.0.1:4317"}, Address("127.0.0.1", 4317)),
        ({"NUELL_OTLP_ENDPOINT": "otel:4317"}, Address("otel", 4317)),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://[::1]:4317/"}, Address("::1", 4317)),
        (
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://generic:4317",
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://traces:4317",
            },
            Address("traces", 4317),
        ),
        (
            {"NUELL_OTLP_ENDPOINT": "http://edge:4317", "OTEL_EXPORTER_OTLP_ENDPOINT": "x"},
            Address("edge", 4317),
        ),
    ],
)
def test_the_otlp_endpoint_setting(environ: dict[str, str], expected: Address | None) -> None:
    assert StackSettings.from_env(environ).otlp_collector == expected


def _managers_and_clusters(text: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    config = yaml.safe_load(text)
    static = config["static_resources"]
    managers = [
        chain["filters"][0]["typed_config"]
        for listener in static["listeners"]
        for chain in listener["filter_chains"]
    ]
    return managers, static["clusters"]


@pytest.mark.parametrize("target", ["local", "compose", "kubernetes"])
def test_tracing_is_rendered_only_with_an_endpoint(data_dir: Path, target: str) -> None:
    plain = render_envoy(StackSettings.from_env(with_data({}, data_dir)), target=target)
    managers, clusters = _managers_and_clusters(plain)
    assert all("tracing" not in hcm for hcm in managers)
    assert [cluster["name"] for cluster in clusters] == ["py_gateway"]
    assert "opentelemetry" not in plain

    environ = with_data({"NUELL_OTLP_ENDPOINT": "http://otel-collector:4317"}, data_dir)
    managers, clusters = _managers_and_clusters(
        render_envoy(StackSettings.from_env(environ), target=target)
    )
    for hcm in managers:  # every listener traces
        provider = hcm["tracing"]["provider"]
        assert provider["name"] == "envoy.tracers.opentelemetry"
        otel = provider["typed_config"]
        assert otel["service_name"] == "envoy"
        assert otel["grpc_service"]["envoy_grpc"]["cluster_name"] == "otlp_collector"
    (collector,) = [c for c in clusters if c["name"] == "otlp_collector"]
    assert collector["type"] == "STRICT_DNS"
    (endpoint,) = collector["load_assignment"]["endpoints"][0]["lb_endpoints"]
    assert endpoint["endpoint"]["address"]["socket_address"] == {
        "address": "otel-collector",
        "port_value": 4317,
    }
    options = collector["typed_extension_protocol_options"]
    assert "http2_protocol_options" in next(iter(options.values()))["explicit_http_config"]


def test_envoys_span_is_the_parent_of_the_gateways(
    processes: Launcher,
    compute_bin: Path,
    migrated_database_url: str,
    dev_certificate: DevCertificate,
    tmp_path: Path,
) -> None:
    """Through the real edge, gateway and rust_compute: one trace, Envoy at its root."""
    collector = otlp_collector()
    try:
        otel = {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "50"}
        settings = backend_settings()
        env = base_env(NUELL_WORKERS="1", **otel)
        processes.start(
            stack.compute_service(settings, env),
            stack.gateway_service(settings, env, migrated_database_url),
        )
        compute_at, gateway_at = settings.compute.connect_target, settings.gateway.connect_target
        settings = edge_settings(
            Backend(compute_at, gateway_at, migrated_database_url),
            dev_certificate,
            {"NUELL_OTLP_ENDPOINT": collector.endpoint},
        )
        edge = start_envoy(processes, settings, tmp_path, "traced-envoy")

        email, password = f"traced-{uuid.uuid4().hex[:12]}@example.com", "Traced-edge-call-7!"
        with grpc.insecure_channel(edge.target) as channel:
            auth = AuthServiceStub(channel)
            auth.Register(auth_pb.RegisterRequest(email=email, password=password))
            mark_verified(migrated_database_url, email)
            token = auth.Login(auth_pb.LoginRequest(email=email, password=password)).access_token
            _, call = ComputeServiceStub(channel).Analyze.with_call(
                compute_pb.AnalyzeRequest(text="through the edge"),
                metadata=(("authorization", f"Bearer {token}"),),
            )
        _, trace_id, gateway_span, _ = dict(call.trailing_metadata())["traceparent"].split("-")

        def trace(spans: list[Any]) -> dict[tuple[str, str], Any] | None:
            found = {(s.service, s.kind): s for s in spans if s.trace_id == trace_id}
            wanted = {("envoy", "SERVER"), ("py_gateway", "SERVER"), ("py_gateway", "CLIENT")}
            return found if wanted | {("rust_compute", "SERVER")} <= set(found) else None

        # Envoy sends its spans every few seconds.
        spans = collector.wait_for(trace, within=30)
    finally:
        collector.stop()
    envoy, server = spans["envoy", "SERVER"], spans["py_gateway", "SERVER"]
    client, compute_span = spans["py_gateway", "CLIENT"], spans["rust_compute", "SERVER"]
    assert envoy.parent_span_id == ""  # the edge started the trace
    assert server.parent_span_id == envoy.span_id
    assert server.span_id == gateway_span
    assert client.parent_span_id == server.span_id
    assert compute_span.parent_span_id == client.span_id
    # The edge's request id is the gateway's and rust_compute's.
    request_id = server.attributes["nuell.request_id"]
    assert envoy.attributes.get("guid:x-request-id") == request_id
    assert compute_span.attributes["nuell.request_id"] == request_id


def test_the_reads_the_edge_retries_are_the_contracts_side_effect_free_unary_methods() -> None:
    # One list for both: a Connect GET and an edge retry are safe for the same
    # reason, and a method marked in the proto but missing here would be
    # refused as a GET (its route would require POST).
    contract = descriptor_pb2.FileDescriptorSet.FromString(BARE_CONTRACT.read_bytes())
    reads = {
        f"{file.package}.{service.name}/{method.name}"
        for file in contract.file
        for service in file.service
        for method in service.method
        if method.options.idempotency_level == descriptor_pb2.MethodOptions.NO_SIDE_EFFECTS
        and not (method.client_streaming or method.server_streaming)
    }
    assert reads == set(EDGE_RETRYABLE_METHODS) - {"grpc.health.v1.Health/Check"}
