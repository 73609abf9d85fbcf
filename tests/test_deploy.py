"""deploy/ renders, validates and keeps its promises, offline.

Each variant is rendered with ``kubectl kustomize`` (kustomize built in) and
every object is validated against the Kubernetes schemas of the pinned
version (the ``kubernetes-validate`` package), every KEDA ``ScaledObject``
against KEDA's published schema shipped in ``deploy/schemas/``. Then the
rules a platform team relies on are checked on the rendered objects: probes,
resources from the measured RSS, hardened pods, drain-long-enough grace,
imageproc's NetworkPolicy, every runner stage scaled by its own queue, and
every setting the services read (``imgpipe.runtime.config``) loaded from the
rendered ConfigMaps and Secret through the services' own settings classes.

No cluster runs here: what a cluster alone can tell (images pulled, pods
scheduled, KEDA reaching RabbitMQ) is not tested; docs/deploy.md says so.
"""

from __future__ import annotations

import base64
import copy
import functools
import json
import re
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import kubernetes_validate
import pytest
import yaml
from pydantic_settings import BaseSettings

from imgpipe.broker.topology import work_queue_name
from imgpipe.imageproc.settings import ImageprocSettings
from imgpipe.provenance.settings import ProvenanceSettings
from imgpipe.runner.settings import RunnerSettings
from imgpipe.runtime import config
from imgpipe.upload.settings import UploadSettings

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
KUBERNETES_VERSION = "1.32.0"
KEDA_SCHEMA = DEPLOY / "schemas" / "keda.sh" / "scaledobject_v1alpha1.json"
VARIANTS = {
    "bring-your-own": DEPLOY / "overlays" / "bring-your-own",
    "trial": DEPLOY / "overlays" / "trial",
    "two-stages": DEPLOY / "examples" / "two-stages",
    "trial-without-keda": DEPLOY / "examples" / "trial-without-keda",
}
WITHOUT_KEDA = {"trial-without-keda"}
BYO_SECRET_EXAMPLE = DEPLOY / "overlays" / "bring-your-own" / "secret.env.example"

SERVICES: dict[str, type[BaseSettings]] = {
    "upload-server": UploadSettings,
    "runner": RunnerSettings,
    "imageproc": ImageprocSettings,
    "provenance": ProvenanceSettings,
}
LISTEN = {"upload-server": "upload", "runner": "runner", "imageproc": "imageproc",
          "provenance": "provenance"}
"""Command -> prefix of its ``*_HOST`` / ``*_PORT`` settings."""

PEAK_RSS_MB = {"upload-server": 131, "runner": 103, "imageproc": 300, "provenance": 69}
"""Highest peak RSS measured per service (docs/benchmarks.md: bench/pipeline.py,
bench/memory.py, bench/imageproc.py); requests must cover it, limits leave room."""

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
SUPERSEDED_BY_AMQP_URL = {"AMQP_HOST", "AMQP_PORT", "AMQP_VHOST", "RABBITMQ_USER",
                          "RABBITMQ_PASSWORD"}

KUBECTL = shutil.which("kubectl")
pytestmark = [
    pytest.mark.skipif(
        KUBECTL is None,
        reason="kubectl (with kustomize built in) is not installed; it comes with the "
               "machine's google-cloud-cli (Debian's kubernetes-client is 1.20, too old)",
    ),
    pytest.mark.slow,  # 10-20 s on the shared 2-CPU machine: three renders, ~100 objects
]


# --- rendering ---------------------------------------------------------------

@functools.cache
def _render(variant: str) -> tuple[dict[str, Any], ...]:
    assert KUBECTL is not None
    done = subprocess.run([KUBECTL, "kustomize", str(VARIANTS[variant])],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"kubectl kustomize {variant} failed:\n{done.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(done.stdout) if doc)


def rendered(variant: str) -> list[dict[str, Any]]:
    """The variant's objects (a deep copy: tests may change theirs)."""
    return copy.deepcopy(list(_render(variant)))


def of_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def imgpipe_deployments(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in of_kind(objects, "Deployment")
            if d["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/name")
            == "imgpipe"]


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, deployment["metadata"]["name"]
    result: dict[str, Any] = containers[0]
    return result


def command(deployment: dict[str, Any]) -> str:
    args = container(deployment)["args"]
    assert args[0] in SERVICES, f"{deployment['metadata']['name']}: unknown command {args}"
    return str(args[0])


def by_name(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [o for o in of_kind(objects, kind) if o["metadata"]["name"] == name]
    assert found, f"no {kind} {name} in the render"
    return found[0]


def parse_env_file(path: Path) -> dict[str, str]:
    pairs = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            pairs[key.strip()] = value
    return pairs


def secret_data(objects: list[dict[str, Any]], name: str) -> dict[str, str]:
    """The Secret's values: rendered (trial), or the documented example (bring-your-own)."""
    for secret in of_kind(objects, "Secret"):
        if secret["metadata"]["name"] == name:
            data = {k: base64.b64decode(v).decode() for k, v in secret.get("data", {}).items()}
            return data | secret.get("stringData", {})
    assert name == "imgpipe-backends", f"Secret {name} is neither rendered nor documented"
    return parse_env_file(BYO_SECRET_EXAMPLE)


def environment(objects: list[dict[str, Any]], deployment: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """Each variable the container gets -> (where from: configmap|secret|literal, value)."""
    env: dict[str, tuple[str, str]] = {}
    spec = container(deployment)
    for source in spec.get("envFrom", []):
        assert "configMapRef" in source, "secrets are referenced key by key, never envFrom"
        data = by_name(objects, "ConfigMap", source["configMapRef"]["name"]).get("data", {})
        env.update({k: ("configmap", v) for k, v in data.items()})
    for var in spec.get("env", []):
        ref = var.get("valueFrom", {})
        if "secretKeyRef" in ref:
            key = ref["secretKeyRef"]
            values = secret_data(objects, key["name"])
            if key["key"] not in values:
                assert key.get("optional"), f"{var['name']}: Secret key {key['key']} missing"
                continue
            env[var["name"]] = ("secret", values[key["key"]])
        elif "configMapKeyRef" in ref:
            key = ref["configMapKeyRef"]
            env[var["name"]] = ("configmap", by_name(objects, "ConfigMap", key["name"])["data"][key["key"]])
        else:
            env[var["name"]] = ("literal", var.get("value", ""))
    return env


def settings_of(cls: type[BaseSettings], env: Mapping[str, tuple[str, str]],
                monkeypatch: pytest.MonkeyPatch) -> Any:
    """The service's settings as it would load them in the pod (the real code)."""
    for name in list_setting_names(cls):
        monkeypatch.delenv(name, raising=False)
    for name, (_, value) in env.items():
        monkeypatch.setenv(name, value)
    return config.load(cls)


def list_setting_names(cls: type[BaseSettings]) -> list[str]:
    return [name.upper() for name in cls.model_fields]


def matches(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """Kubernetes label selector semantics (matchLabels + matchExpressions)."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def pod_labels(workload: dict[str, Any]) -> dict[str, str]:
    labels: dict[str, str] = workload["spec"]["template"]["metadata"]["labels"]
    return labels


def named_port(deployment: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    for p in container(deployment)["ports"]:
        if p["name"] == port:
            return int(p["containerPort"])
    raise AssertionError(f"{deployment['metadata']['name']}: no port named {port}")


def all_variants() -> list[Any]:
    return [pytest.param(variant, id=variant) for variant in VARIANTS]


# --- schemas -----------------------------------------------------------------

@pytest.mark.parametrize("variant", all_variants())
def test_every_object_is_valid_kubernetes(variant: str) -> None:
    objects = rendered(variant)
    kinds = {o["kind"] for o in objects}
    assert {"Deployment", "Service", "ConfigMap", "PodDisruptionBudget", "NetworkPolicy",
            "HorizontalPodAutoscaler"} <= kinds
    assert ("ScaledObject" in kinds) == (variant not in WITHOUT_KEDA)
    for obj in objects:
        if obj["apiVersion"].startswith("keda.sh/"):
            continue  # a CRD: KEDA's schema, below
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{obj['kind']} {obj['metadata']['name']}: {exc.message}")


@functools.cache
def keda_validator() -> jsonschema.protocols.Validator:
    schema = json.loads(KEDA_SCHEMA.read_text())
    validator_class = jsonschema.validators.validator_for(schema, default=jsonschema.Draft7Validator)
    validator_class.check_schema(schema)
    validator: jsonschema.protocols.Validator = validator_class(schema)
    return validator


@pytest.mark.parametrize("variant", all_variants())
def test_scaled_objects_match_kedas_published_schema(variant: str) -> None:
    scaled = of_kind(rendered(variant), "ScaledObject")
    assert scaled or variant in WITHOUT_KEDA
    for obj in scaled:
        assert obj["apiVersion"] == "keda.sh/v1alpha1"
        errors = [e.message for e in keda_validator().iter_errors(obj)]
        assert not errors, f"ScaledObject {obj['metadata']['name']}: {errors}"


def test_the_keda_schema_refuses_what_keda_would() -> None:
    good = of_kind(rendered("trial"), "ScaledObject")[0]
    assert keda_validator().is_valid(good)
    misspelt = copy.deepcopy(good)
    misspelt["spec"]["maxReplicas"] = misspelt["spec"].pop("maxReplicaCount")
    assert not keda_validator().is_valid(misspelt)
    no_trigger = copy.deepcopy(good)
    no_trigger["spec"]["triggers"] = []
    assert not keda_validator().is_valid(no_trigger)


# --- the Deployments ---------------------------------------------------------

@pytest.mark.parametrize("variant", all_variants())
def test_every_service_deployment_is_probed_sized_and_hardened(variant: str) -> None:
    objects = rendered(variant)
    deployments = imgpipe_deployments(objects)
    assert {command(d) for d in deployments} == set(SERVICES)
    assert len({container(d)["image"] for d in deployments}) == 1, "one image for all"
    for d in deployments:
        name, spec, c = d["metadata"]["name"], d["spec"]["template"]["spec"], container(d)
        assert d["metadata"]["labels"]["app.kubernetes.io/part-of"] == "imgpipe", \
            f"{name}: `rollout restart -l app.kubernetes.io/part-of=imgpipe` must find it"
        assert not c["image"].endswith(":latest"), f"{name}: pin the image"
        for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
            assert c[probe]["httpGet"]["path"] == path, f"{name}: {probe}"
            assert named_port(d, c[probe]["httpGet"]["port"]) == c["ports"][0]["containerPort"]
        resources = c["resources"]
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(resources[kind]), f"{name}: {kind}"
        request_mb = mebibytes(resources["requests"]["memory"])
        limit_mb = mebibytes(resources["limits"]["memory"])
        assert request_mb >= PEAK_RSS_MB[command(d)], f"{name}: request below measured RSS"
        assert limit_mb >= 1.5 * PEAK_RSS_MB[command(d)], f"{name}: limit too close to RSS"
        pod_security = spec["securityContext"]
        assert pod_security["runAsNonRoot"] is True and pod_security["runAsUser"] != 0
        assert pod_security["seccompProfile"]["type"] == "RuntimeDefault"
        security = c["securityContext"]
        assert security["allowPrivilegeEscalation"] is False, name
        assert security["readOnlyRootFilesystem"] is True, name
        assert security["capabilities"]["drop"] == ["ALL"], name
        assert spec["automountServiceAccountToken"] is False, name
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        writable = {m["mountPath"] for m in c.get("volumeMounts", []) if not m.get("readOnly")}
        for mount in c.get("volumeMounts", []):
            volume = volumes[mount["name"]]
            assert "emptyDir" in volume or mount.get("readOnly"), f"{name}: {mount}"
        if command(d) == "imageproc":
            assert writable == {"/tmp"}, "libvips' temporary files"
        else:
            assert not writable, f"{name} writes nothing (docs/deploy.md)"


def mebibytes(quantity: str) -> float:
    found = re.fullmatch(r"(\d+(?:\.\d+)?)(Mi|Gi|M|G)", quantity)
    assert found, f"memory quantity {quantity!r}"
    number, unit = found.groups()
    factor = {"Mi": 1.0, "Gi": 1024.0, "M": 1e6 / 2**20, "G": 1e9 / 2**20}[unit]
    return float(number) * factor


@pytest.mark.parametrize("variant", all_variants())
def test_termination_grace_covers_the_drain(variant: str, monkeypatch: pytest.MonkeyPatch) -> None:
    objects = rendered(variant)
    for d in imgpipe_deployments(objects):
        settings = settings_of(SERVICES[command(d)], environment(objects, d), monkeypatch)
        pre_stop = container(d).get("lifecycle", {}).get("preStop", {}).get("sleep", {})
        needed = pre_stop.get("seconds", 0) + settings.shutdown_grace + 5
        grace = d["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert grace >= needed, f"{d['metadata']['name']}: {grace} s < {needed} s of drain"
        if command(d) in ("upload-server", "imageproc"):  # behind a Service
            assert pre_stop.get("seconds", 0) >= 5, d["metadata"]["name"]


@pytest.mark.parametrize("variant", all_variants())
def test_every_deployment_has_a_disruption_budget(variant: str) -> None:
    objects = rendered(variant)
    budgets = of_kind(objects, "PodDisruptionBudget")
    for d in imgpipe_deployments(objects):
        covering = [b for b in budgets if matches(b["spec"]["selector"], pod_labels(d))]
        assert len(covering) == 1, f"{d['metadata']['name']}: {len(covering)} budgets"
        assert covering[0]["spec"].get("maxUnavailable") == 1


# --- network -----------------------------------------------------------------

@pytest.mark.parametrize("variant", all_variants())
def test_imageproc_is_reachable_only_from_runners_and_upload(variant: str) -> None:
    objects = rendered(variant)
    deployments = imgpipe_deployments(objects)
    imageproc = next(d for d in deployments if command(d) == "imageproc")
    policies = [p for p in of_kind(objects, "NetworkPolicy")
                if matches(p["spec"]["podSelector"], pod_labels(imageproc))]
    assert policies, "no NetworkPolicy selects imageproc"
    workloads = deployments + of_kind(objects, "StatefulSet")
    allowed: set[str] = set()
    for policy in policies:
        assert "Ingress" in policy["spec"]["policyTypes"]
        for rule in policy["spec"].get("ingress", []):
            assert rule.get("from"), "a rule without 'from' admits everyone"
            for peer in rule["from"]:
                assert set(peer) == {"podSelector"}, f"{peer}: other namespaces or addresses"
                allowed |= {w["metadata"]["name"] for w in workloads
                            if matches(peer["podSelector"], pod_labels(w))}
            assert [p["port"] for p in rule["ports"]] == [container(imageproc)["ports"][0]["containerPort"]]
    expected = {d["metadata"]["name"] for d in deployments if command(d) in ("runner", "upload-server")}
    assert allowed == expected


@pytest.mark.parametrize("variant", all_variants())
def test_services_reach_their_pods(variant: str) -> None:
    objects = rendered(variant)
    workloads = of_kind(objects, "Deployment") + of_kind(objects, "StatefulSet")
    for service in of_kind(objects, "Service"):
        targets = [w for w in workloads if matches({"matchLabels": service["spec"]["selector"]},
                                                   pod_labels(w))]
        assert targets, f"Service {service['metadata']['name']} selects no pods"
        for port in service["spec"]["ports"]:
            names = {p.get("name") for w in targets
                     for c in w["spec"]["template"]["spec"]["containers"] for p in c["ports"]}
            assert port["targetPort"] in names, f"{service['metadata']['name']}: {port}"


# --- scaling -----------------------------------------------------------------

@pytest.mark.parametrize("variant", all_variants())
def test_every_runner_stage_scales_with_its_own_queue(variant: str) -> None:
    objects = rendered(variant)
    deployments = imgpipe_deployments(objects)
    upload = next(d for d in deployments if command(d) == "upload-server")
    runners = [d for d in deployments if command(d) == "runner"]
    scaled = of_kind(objects, "ScaledObject")
    env = {d["metadata"]["name"]: {k: v for k, (_, v) in environment(objects, d).items()}
           for d in deployments}
    published = {env[r["metadata"]["name"]]["AMQP_EXCHANGE_PUBLISH"] for r in runners}
    subscribed = [env[r["metadata"]["name"]]["AMQP_EXCHANGE_SUBSCRIBE"] for r in runners]
    assert len(set(subscribed)) == len(runners), "one runner Deployment per stage queue"
    assert env[upload["metadata"]["name"]]["AMQP_EXCHANGE_SUBSCRIBE"] in subscribed
    for runner in runners:
        name, runner_env = runner["metadata"]["name"], env[runner["metadata"]["name"]]
        source = runner_env["AMQP_EXCHANGE_SUBSCRIBE"]
        assert source in published | {env[upload["metadata"]["name"]]["AMQP_EXCHANGE_SUBSCRIBE"]}, \
            f"{name} consumes {source}, which nothing publishes"
        if variant in WITHOUT_KEDA:
            assert runner["spec"]["replicas"] >= 1, f"{name}: a fixed count without KEDA"
            continue
        assert "replicas" not in runner["spec"], f"{name}: KEDA owns the replicas"
        mine = [s for s in scaled if s["spec"]["scaleTargetRef"]["name"] == name]
        assert len(mine) == 1, f"{name}: {len(mine)} ScaledObjects"
        (trigger,) = mine[0]["spec"]["triggers"]
        assert trigger["type"] == "rabbitmq"
        assert trigger["metadata"]["queueName"] == work_queue_name(source)
        assert trigger["metadata"]["mode"] == "QueueLength"
        host_var = trigger["metadata"]["hostFromEnv"]
        origin, url = environment(objects, runner)[host_var]
        assert origin == "secret", "the broker URL carries a password"
        host = urlsplit(url).hostname or ""
        assert "." in host, f"KEDA resolves {host!r} from its own namespace: use a FQDN"
    assert {s["spec"]["scaleTargetRef"]["name"] for s in scaled} == \
        (set() if variant in WITHOUT_KEDA else {r["metadata"]["name"] for r in runners})


@pytest.mark.parametrize("variant", all_variants())
def test_imageproc_and_upload_scale_on_cpu(variant: str) -> None:
    objects = rendered(variant)
    hpas = {h["spec"]["scaleTargetRef"]["name"]: h for h in of_kind(objects, "HorizontalPodAutoscaler")}
    for d in imgpipe_deployments(objects):
        if command(d) not in ("imageproc", "upload-server"):
            continue
        hpa = hpas.pop(d["metadata"]["name"])
        assert hpa["spec"]["scaleTargetRef"]["kind"] == "Deployment"
        assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu"]
        assert "replicas" not in d["spec"], "the HPA owns the replicas"
        assert container(d)["resources"]["requests"]["cpu"], "utilization needs a request"
    assert not hpas, f"HPAs of nothing: {set(hpas)}"


# --- settings ----------------------------------------------------------------

@pytest.mark.parametrize("variant", all_variants())
def test_every_setting_is_provided_or_defaulted_and_loads(
    variant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    objects = rendered(variant)
    known = {n for cls in SERVICES.values() for n in list_setting_names(cls)}
    for cm in of_kind(objects, "ConfigMap"):
        if cm["metadata"]["name"].startswith("imgpipe-"):
            unknown = set(cm.get("data", {})) - known
            assert not unknown, f"{cm['metadata']['name']}: no service reads {unknown}"
    for d in imgpipe_deployments(objects):
        service, name = command(d), d["metadata"]["name"]
        cls, env = SERVICES[service], environment(objects, d)
        for field, info in cls.model_fields.items():
            assert field.upper() in env or not info.is_required(), f"{name}: {field.upper()}"
        for var, (origin, _) in env.items():
            field = cls.model_fields.get(var.lower())
            if field is not None and "SecretStr" in str(field.annotation):
                assert origin == "secret", f"{name}: {var} must come from the Secret"
            if var == "S3_ACCESS_KEY" or var == "AMQP_URL" or var.endswith("_USER"):
                assert origin == "secret", f"{name}: {var} must come from the Secret"
        settings = settings_of(cls, env, monkeypatch)
        prefix = LISTEN[service]
        assert getattr(settings, f"{prefix}_host") == "0.0.0.0", f"{name} listens on loopback"
        assert getattr(settings, f"{prefix}_port") == container(d)["ports"][0]["containerPort"]
        if isinstance(settings, config.AmqpSettings):
            assert "AMQP_URL" in env, f"{name}: no broker address"
            assert not SUPERSEDED_BY_AMQP_URL & set(env), f"{name}: ignored when AMQP_URL is set"
            assert urlsplit(settings.broker_url()).hostname not in LOOPBACK
        for url_field in ("s3_url", "couchdb_url", "imageproc_url"):
            if hasattr(settings, url_field):
                host = urlsplit(getattr(settings, url_field)).hostname
                assert host and host not in LOOPBACK, f"{name}: {url_field.upper()} is {host}"


def mounted_files(deployment: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """Path in the container -> (Secret or ConfigMap name, key) of each file mounted from one."""
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"].get("volumes", [])}
    files = {}
    for mount in container(deployment).get("volumeMounts", []):
        volume = volumes[mount["name"]]
        source = volume.get("secret") or volume.get("configMap")
        if source is None:
            continue
        assert "items" in source, f"{mount['name']}: name the keys a pod gets"
        source_name = source.get("secretName") or source.get("name")
        for item in source["items"]:
            files[f"{mount['mountPath']}/{item['path']}"] = (source_name, item["key"])
    return files


@pytest.mark.parametrize("variant", all_variants())
def test_file_settings_name_mounted_files_and_the_key_stays_in_imageproc(variant: str) -> None:
    objects = rendered(variant)
    for d in imgpipe_deployments(objects):
        name, files = d["metadata"]["name"], mounted_files(d)
        env = environment(objects, d)
        for var in ("C2PA_CERT_CHAIN", "C2PA_PRIVATE_KEY", "C2PA_TRUST_ANCHORS",
                    "IMGPIPE_PRESETS", "IMAGEPROC_OVERLAYS"):
            if var in env and env[var][1].startswith("/"):
                assert env[var][1] in files or any(
                    f.startswith(env[var][1].rstrip("/") + "/") for f in files
                ), f"{name}: {var}={env[var][1]} is not a mounted file"
        private = {path for path, (_, key) in files.items() if key.endswith("key.pem")}
        assert not private or command(d) == "imageproc", f"{name} mounts a private key"
    if variant == "two-stages":
        imageproc = next(d for d in imgpipe_deployments(objects) if command(d) == "imageproc")
        assert environment(objects, imageproc)["C2PA_SIGN"][1] == "on"


def test_bring_your_own_documents_every_secret_key_it_needs() -> None:
    documented = set(parse_env_file(BYO_SECRET_EXAMPLE))
    needed = set()
    for d in imgpipe_deployments(rendered("bring-your-own")):
        for var in container(d).get("env", []):
            ref = var.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                assert ref["name"] == "imgpipe-backends"
                needed.add(ref["key"])
    assert needed and needed <= documented, needed - documented
    assert not of_kind(rendered("bring-your-own"), "Secret"), "your Secret, not ours"


def test_trial_runs_its_own_backends_where_the_settings_point() -> None:
    objects = rendered("trial")
    namespace = by_name(objects, "Namespace", "imgpipe-trial")["metadata"]["name"]
    sets = {s["metadata"]["name"]: s for s in of_kind(objects, "StatefulSet")}
    assert set(sets) == {"rabbitmq", "couchdb", "minio"}
    images = {n: s["spec"]["template"]["spec"]["containers"][0]["image"] for n, s in sets.items()}
    assert images["couchdb"] == "couchdb:3.4.3"
    assert all(":" in i and not i.endswith(":latest") for i in images.values())
    services = {s["metadata"]["name"] for s in of_kind(objects, "Service")}
    common = by_name(objects, "ConfigMap", "imgpipe-common")["data"]
    secret = secret_data(objects, "imgpipe-backends")
    assert urlsplit(common["S3_URL"]).hostname in services
    assert urlsplit(common["COUCHDB_URL"]).hostname in services
    amqp_host = urlsplit(secret["AMQP_URL"]).hostname
    assert amqp_host == f"rabbitmq.{namespace}.svc.cluster.local"
    for s in sets.values():
        c = s["spec"]["template"]["spec"]["containers"][0]
        assert c.get("readinessProbe") and c.get("livenessProbe"), s["metadata"]["name"]
        assert c["resources"]["limits"]["memory"], s["metadata"]["name"]
