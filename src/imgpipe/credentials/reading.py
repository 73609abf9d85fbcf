"""Reading and validating Content Credentials, with no server.

:func:`inspect` validates a file's manifest store (claim signatures, hash
binding of the bytes, trust of the signing certificate against the given
anchors) and summarises its chain: each manifest's signer, actions,
ingredients and imgpipe step, from the active manifest back through the
parent ingredients' manifests.

The verdict (:attr:`Inspection.verdict`): ``none`` (no credentials),
``invalid`` (the C2PA state ``Invalid``: a signature or hash failed, or the
bytes were changed), ``untrusted`` (the C2PA state ``Valid``, which includes
a ``signingCredential.untrusted`` failure when the signer chains to no
anchor), ``trusted`` (``Trusted``). Only ``trusted`` passes a strict check.
"""

from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass, field
from typing import Any

import c2pa

from imgpipe.credentials.manifest import STEP_LABEL
from imgpipe.credentials.signing import context_settings

VERDICTS = ("none", "invalid", "untrusted", "trusted")


@dataclass
class ManifestSummary:
    """One manifest of the chain, for people and for the page."""

    label: str
    title: str | None
    signer: str | None
    issuer: str | None
    algorithm: str | None
    signed_at: str | None
    generator: list[str]
    actions: list[dict[str, Any]]
    ingredients: list[dict[str, Any]]
    imgpipe: dict[str, Any] | None = None


@dataclass
class Inspection:
    """A file's Content Credentials and their validation."""

    verdict: str
    state: str | None
    failures: list[dict[str, str]] = field(default_factory=list)
    chain: list[ManifestSummary] = field(default_factory=list)
    error: str | None = None

    @property
    def active(self) -> ManifestSummary | None:
        return self.chain[0] if self.chain else None

    def to_dict(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "state": self.state, "failures": self.failures,
                "error": self.error, "manifests": [asdict(m) for m in self.chain]}


def _failures(results: dict[str, Any] | None) -> list[dict[str, str]]:
    found: list[dict[str, str]] = []
    for scope in ((results or {}).get("activeManifest") or {},
                  *((results or {}).get("ingredientDeltas") or [])):
        status = scope.get("validationDeltas", scope) if isinstance(scope, dict) else {}
        for item in status.get("failure") or []:
            found.append({"code": str(item.get("code")), "url": str(item.get("url", "")),
                          "explanation": str(item.get("explanation", ""))})
    return found


def _summary(label: str, manifest: dict[str, Any]) -> ManifestSummary:
    info = manifest.get("signature_info") or {}
    actions: list[dict[str, Any]] = []
    step: dict[str, Any] | None = None
    for assertion in manifest.get("assertions") or []:
        if str(assertion.get("label", "")).startswith("c2pa.actions"):
            for action in (assertion.get("data") or {}).get("actions") or []:
                agent = action.get("softwareAgent")
                actions.append({
                    "action": action.get("action"),
                    "description": action.get("description"),
                    "agent": agent.get("name") if isinstance(agent, dict) else agent,
                })
        elif assertion.get("label") == STEP_LABEL:
            step = assertion.get("data")
    ingredients = [{
        "title": i.get("title"), "format": i.get("format"),
        "relationship": i.get("relationship"), "instance_id": i.get("instance_id"),
        "manifest": i.get("active_manifest"),
    } for i in manifest.get("ingredients") or []]
    return ManifestSummary(
        label=label, title=manifest.get("title"), signer=info.get("common_name"),
        issuer=info.get("issuer"), algorithm=info.get("alg"), signed_at=info.get("time"),
        generator=[f"{g.get('name')} {g.get('version') or ''}".strip()
                   for g in manifest.get("claim_generator_info") or []],
        actions=actions, ingredients=ingredients, imgpipe=step,
    )


def chain_of(store: dict[str, Any]) -> list[ManifestSummary]:
    """The active manifest, then each parent ingredient's manifest, back to the first."""
    manifests: dict[str, Any] = store.get("manifests") or {}
    chain: list[ManifestSummary] = []
    label = store.get("active_manifest")
    seen: set[str] = set()
    while label and label in manifests and label not in seen:
        seen.add(label)
        summary = _summary(label, manifests[label])
        chain.append(summary)
        parent = next((i for i in summary.ingredients if i["relationship"] == "parentOf"), None)
        label = parent["manifest"] if parent else None
    return chain


def verdict_of(state: str | None) -> str:
    if state == "Trusted":
        return "trusted"
    if state == "Valid":
        return "untrusted"
    return "invalid"


def inspect(data: bytes, media_type: str | None = None, anchors: str | None = None) -> Inspection:
    """Validate ``data``'s Content Credentials against ``anchors`` (PEM) and summarise them.

    Runs native code (releasing the GIL): call it from a worker thread in
    async code.
    """
    context = c2pa.Context.from_dict(context_settings(anchors))
    try:
        reader = c2pa.Reader.try_create(media_type or None, io.BytesIO(data), context=context)
    except c2pa.C2paError.NotSupported:
        return Inspection(verdict="none", state=None,
                          error="not a file format that can carry Content Credentials")
    except c2pa.C2paError as exc:
        return Inspection(verdict="invalid", state=None, error=str(exc))
    if reader is None:
        return Inspection(verdict="none", state=None)
    with reader:
        store = json.loads(reader.json())
    state = store.get("validation_state")
    return Inspection(verdict=verdict_of(state), state=state,
                      failures=_failures(store.get("validation_results")),
                      chain=chain_of(store))
