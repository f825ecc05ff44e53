"""GET /metrics: Prometheus text that parses, and counters that follow the traffic."""

from __future__ import annotations

from typing import Any

import trio
from prometheus_client.parser import text_string_to_metric_families

from tests.support import WAIT, connect, free_port, http_request, running_server


async def scrape(router: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics as {(name, sorted labels): value}."""
    response = await http_request(router, "GET", "/metrics")
    assert response.status == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.body.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_metrics_parse_and_name_every_family() -> None:
    async with running_server(http_port=free_port(), node="n-7") as router:
        response = await http_request(router, "GET", "/metrics")
        families = {f.name: f.type for f in text_string_to_metric_families(response.body.decode())}
        for name, kind in {
            "roomcast_connections": "gauge", "roomcast_users": "gauge", "roomcast_rooms": "gauge",
            "roomcast_ready": "gauge", "roomcast_publishes": "counter",
            "roomcast_deliveries": "counter", "roomcast_frames_in": "counter",
            "roomcast_frames_out": "counter", "roomcast_bytes_out": "counter",
            "roomcast_drops": "counter", "roomcast_closes": "counter",
            "roomcast_auth_failures": "counter", "roomcast_commands": "counter",
            "roomcast_delivery_latency_seconds": "histogram",
        }.items():
            assert families.get(name) == kind, name
        samples = await scrape(router)
        assert value(samples, "roomcast_node_info", node="n-7", backplane="memory") == 1


async def test_counters_move_after_traffic() -> None:
    async with running_server(http_port=free_port()) as router:
        before = await scrape(router)
        async with connect(router, sub="alice") as alice, connect(router, sub="bob") as bob:
            await alice.subscribe("project:1")
            await bob.subscribe("project:1")
            await alice.publish("project:1", {"n": 1})
            await bob.recv_type("message")
            during = await scrape(router)
        with trio.fail_after(WAIT):
            await router.wait_drained()  # the server has forgotten both connections
        after = await scrape(router)
        assert value(before, "roomcast_publishes_total") == 0
        assert value(during, "roomcast_publishes_total") == 1
        assert value(during, "roomcast_deliveries_total") == 2
        assert value(during, "roomcast_connections") == 2
        assert value(during, "roomcast_users") == 2
        assert value(during, "roomcast_rooms") == 1
        assert value(during, "roomcast_commands_total", type="subscribe") == 2
        assert value(during, "roomcast_commands_total", type="publish") == 1
        assert value(during, "roomcast_frames_in_total") == 3
        assert value(during, "roomcast_frames_out_total") >= 5
        assert value(during, "roomcast_bytes_out_total") > 0
        assert value(during, "roomcast_connections_opened_total") == 2
        assert value(during, "roomcast_delivery_latency_seconds_count") >= 1
        assert value(after, "roomcast_closes_total", code="1000") == 2
        assert value(after, "roomcast_connections") == 0


async def test_the_latency_histogram_buckets_are_cumulative() -> None:
    async with running_server(http_port=free_port()) as router, connect(router) as alice:
        await alice.subscribe("project:1")
        for n in range(3):
            await alice.publish("project:1", n)
        samples = await scrape(router)
        buckets = sorted(
            (float(dict(labels)["le"]), v) for (name, labels), v in samples.items()
            if name == "roomcast_delivery_latency_seconds_bucket"
        )
        counts = [v for _, v in buckets]
        assert counts == sorted(counts)
        assert buckets[-1][0] == float("inf")
        total = value(samples, "roomcast_delivery_latency_seconds_count")
        assert buckets[-1][1] == total
        assert total >= 1


async def test_a_refused_token_is_counted_by_reason() -> None:
    async with running_server(http_port=free_port()) as router:
        async with connect(router, "not-a-jwt", expect_connected=False) as refused:
            assert (await refused.closed())[0] == 4401
        samples = await scrape(router)
        failures = sum(v for (name, _), v in samples.items()
                       if name == "roomcast_auth_failures_total")
        assert failures == 1
        assert value(samples, "roomcast_closes_total", code="4401") == 1


async def test_http_requests_are_counted_by_route_and_status() -> None:
    async with running_server(http_port=free_port()) as router:
        await http_request(router, "GET", "/healthz")
        await http_request(router, "GET", "/api/stats")
        samples = await scrape(router)
        assert value(samples, "roomcast_http_requests_total", path="/healthz", status="200") == 1
        assert value(samples, "roomcast_http_requests_total", path="/api/stats",
                     status="401") == 1


async def test_two_servers_in_one_process_keep_separate_metrics() -> None:
    async with running_server(http_port=free_port()) as one, \
            running_server(http_port=free_port()) as two:
        await one.publish("project:1", "only on one")
        assert value(await scrape(one), "roomcast_publishes_total") == 1
        assert value(await scrape(two), "roomcast_publishes_total") == 0
