"""What the published records need on the platform, created idempotently (found by title first):

1. the tenant field group, from a published folder's `xdm-fieldgroup.json` (Schema Registry);
2. a schema of the XDM Individual Profile class with that field group and the IdentityMap field
   group, enabled for Profile (`meta:immutableTags: ["union"]`);
3. a dataset on that schema, enabled for Profile and Identity (Catalog).

Primary identity. The records carry each profile's primary identity in `identityMap` with
`primary: true`, in the namespace of that profile's best identity (`identity.namespace_priority`):
CRMID for most, ECID for an anonymous profile that `identity.unmatched: keep` kept. An identity
descriptor marks one field with one fixed namespace, which cannot say that, so the schema takes
its primary identity from `identityMap`; the namespaces the records use are checked to exist in the
platform's Identity Service before anything is created.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from enrich.aep.client import Client, OutcomeUnknown, PlatformError
from enrich.config import Config
from enrich.errors import ConfigError, InputError

log = logging.getLogger(__name__)

REGISTRY = "/data/foundation/schemaregistry"
DATASETS = "/data/foundation/catalog/dataSets"
IDENTITY_NAMESPACES = "/data/core/idnamespace/identities"
PROFILE_CLASS = "https://ns.adobe.com/xdm/context/profile"
IDENTITY_MAP = "https://ns.adobe.com/xdm/context/identitymap"
XED_ID = {"Accept": "application/vnd.adobe.xed-id+json"}
XED_FULL = {"Accept": "application/vnd.adobe.xed+json; version=1"}
PROFILE_TAGS = {"unifiedProfile": ["enabled:true"], "unifiedIdentity": ["enabled:true"]}


@dataclass
class SetupSummary:
    field_group: str = ""
    schema: str = ""
    dataset: str = ""
    created: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    def render(self) -> str:
        if self.requests:
            head = "setup_aep --dry-run: the requests on an empty sandbox (nothing sent)"
            return "\n  ".join([head, *self.requests])
        made = ", ".join(self.created) or "nothing (everything existed)"
        return (f"setup_aep: created {made}\n  field group {self.field_group}\n  schema {self.schema} "
                f"(XDM Individual Profile, enabled for Profile)\n  dataset {self.dataset} (enabled for Profile)\n"
                f"  put it in your config:  aep.dataset_id: {self.dataset}")


def read_field_group(path: Path, cfg: Config) -> dict[str, Any]:
    """The field group a publish run wrote, titled `aep.field_group_title`."""
    try:
        group = json.loads(path.read_text())
    except OSError as exc:
        raise InputError(f"{path}: cannot be read ({exc.strerror}); publish first (jobs/publish.py)") from None
    except ValueError as exc:
        raise InputError(f"{path}: not JSON ({exc})") from None
    return {**group, "title": cfg.aep.field_group_title}


def _find(client: Client, kind: str, title: str) -> dict[str, Any] | None:
    body = client.json("GET", f"{REGISTRY}/tenant/{kind}", what=f"find {kind} titled {title!r}", headers=XED_ID,
                       params={"property": f"title=={title}"})
    found = [r for r in body.get("results", []) if r.get("title") == title]
    return found[0] if found else None


def _datasets(client: Client, name: str) -> dict[str, Any]:
    found = client.json("GET", DATASETS, what=f"find dataset {name!r}", params={"property": f"name=={name}"})
    return {k: v for k, v in found.items() if isinstance(v, dict) and v.get("name") == name}


def _create(client: Client, path: str, what: str, body: Any, find: Callable[[], Any]) -> Any:
    """POST `body`; when the answer was lost, look for the object before asking again (a blind retry
    could create it twice)."""
    for _ in range(client.retry.attempts):
        try:
            return client.json("POST", path, what=what, json=body, ok=(201,), idempotent=False,
                               headers={"Accept": "application/vnd.adobe.xed+json"} if REGISTRY in path else None)
        except OutcomeUnknown as exc:
            found = find()
            if found is not None:
                log.warning("%s: the answer was lost but the object exists; using it", what)
                return found
            log.warning("%s; it did not happen, asking again", exc)
    raise PlatformError(f"{what}: no answer after {client.retry.attempts} tries")


def plan_requests(cfg: Config, group: dict[str, Any]) -> list[str]:
    """The calls made on a sandbox where nothing exists yet (for `--dry-run`)."""
    a = cfg.aep
    return [
        f"GET  {a.platform_url}{REGISTRY}/stats  (tenant id must be {cfg.tenant[1:]})",
        f"GET  {a.platform_url}{IDENTITY_NAMESPACES}  (namespaces {', '.join(cfg.identity.namespace_priority)})",
        f"GET  {a.platform_url}{REGISTRY}/tenant/fieldgroups?property=title=={a.field_group_title}",
        f"POST {a.platform_url}{REGISTRY}/tenant/fieldgroups  {len(json.dumps(group))} bytes: "
        f"{_fields(group)} under {cfg.tenant}",
        f"GET  {a.platform_url}{REGISTRY}/tenant/schemas?property=title=={a.schema_title}",
        f"POST {a.platform_url}{REGISTRY}/tenant/schemas  allOf: XDM Individual Profile, the field group, IdentityMap",
        f"PATCH {a.platform_url}{REGISTRY}/tenant/schemas/<altId>  add /meta:immutableTags [\"union\"]",
        f"GET  {a.platform_url}{DATASETS}?property=name=={a.dataset_name}",
        f"POST {a.platform_url}{DATASETS}  name {a.dataset_name!r}, schemaRef <schema>, tags {PROFILE_TAGS}",
    ]


def _fields(group: dict[str, Any]) -> str:
    props = next(iter(group.get("definitions", {}).values()), {}).get("properties", {})
    inner = next(iter(props.values()), {}).get("properties", {})
    insights = inner.get("insights", {}).get("properties", inner)
    return f"{len(insights)} model object(s) ({', '.join(sorted(insights))})"


def check_namespaces(client: Client, wanted: list[str]) -> None:
    body = client.json("GET", IDENTITY_NAMESPACES, what="identity namespaces")
    known = {str(n.get("code")) for n in body} if isinstance(body, list) else set()
    missing = [n for n in wanted if n not in known]
    if missing:
        raise ConfigError(f"identity namespace(s) {missing} of identity.namespace_priority do not exist in the "
                          "platform sandbox; create them in Identity Service, or change the priority")


def run(client: Client, cfg: Config, group: dict[str, Any]) -> SetupSummary:
    a, out = cfg.aep, SetupSummary()
    tenant = client.json("GET", f"{REGISTRY}/stats", what="tenant id").get("tenantId")
    if f"_{tenant}" != cfg.tenant:
        raise ConfigError(f"the platform's tenant id is _{tenant}, the config says tenant={cfg.tenant}; set "
                          f"tenant: _{tenant} and publish again (field names live under the tenant)")
    check_namespaces(client, cfg.identity.namespace_priority)

    found = _find(client, "fieldgroups", a.field_group_title)
    if found is None:
        found = _create(client, f"{REGISTRY}/tenant/fieldgroups", "create field group", group,
                        lambda: _find(client, "fieldgroups", a.field_group_title))
        out.created.append("field group")
    out.field_group = found["$id"]

    schema = _find(client, "schemas", a.schema_title)
    if schema is None:
        schema = _create(client, f"{REGISTRY}/tenant/schemas", "create schema", {
            "title": a.schema_title, "type": "object",
            "description": "Profiles with the insights published by profile-enrichment.",
            "allOf": [{"$ref": PROFILE_CLASS}, {"$ref": out.field_group}, {"$ref": IDENTITY_MAP}]},
            lambda: _find(client, "schemas", a.schema_title))
        out.created.append("schema")
    out.schema = schema["$id"]
    alt = quote(schema.get("meta:altId") or out.schema, safe="")
    full = client.json("GET", f"{REGISTRY}/tenant/schemas/{alt}", what="read schema", headers=XED_FULL)
    refs = [part.get("$ref") for part in full.get("allOf", [])]
    missing = [r for r in (out.field_group, IDENTITY_MAP) if r not in refs]
    if missing and "union" in full.get("meta:immutableTags", []):
        raise PlatformError(f"schema {a.schema_title!r} is enabled for Profile but lacks {missing}; field groups can "
                            "only be added to it (do so in the UI), or choose another aep.schema_title")
    for ref in missing:
        client.json("PATCH", f"{REGISTRY}/tenant/schemas/{alt}", what=f"add {ref} to the schema",
                    json=[{"op": "add", "path": "/allOf/-", "value": {"$ref": ref}}])
        out.created.append(f"schema field group {ref.rsplit('/', 1)[-1]}")
    if "union" not in full.get("meta:immutableTags", []):
        client.json("PATCH", f"{REGISTRY}/tenant/schemas/{alt}", what="enable the schema for Profile",
                    json=[{"op": "add", "path": "/meta:immutableTags", "value": ["union"]}])
        out.created.append("Profile enablement of the schema")

    mine = _datasets(client, a.dataset_name)
    if len(mine) > 1:
        raise PlatformError(f"{len(mine)} datasets are named {a.dataset_name!r} ({', '.join(sorted(mine))}); "
                            "set aep.dataset_id to the one to use")
    if mine:
        out.dataset, info = next(iter(mine.items()))
        if (info.get("schemaRef") or {}).get("id") not in (None, out.schema):
            raise PlatformError(f"dataset {out.dataset} ({a.dataset_name!r}) is on another schema "
                                f"({info['schemaRef']['id']}); choose another aep.dataset_name")
        tags = info.get("tags") or {}
        if any("enabled:true" not in tags.get(k, []) for k in PROFILE_TAGS):
            client.json("PATCH", f"{DATASETS}/{out.dataset}", what="enable the dataset for Profile",
                        headers={"Content-Type": "application/json-patch+json"},
                        json=[{"op": "add", "path": f"/tags/{k}", "value": v} for k, v in PROFILE_TAGS.items()])
            out.created.append("Profile enablement of the dataset")
    else:
        def existing() -> list[str] | None:
            again = _datasets(client, a.dataset_name)
            return [f"@/dataSets/{k}" for k in again] or None

        made = _create(client, DATASETS, "create dataset", {
            "name": a.dataset_name, "description": "Insights published by profile-enrichment.",
            "schemaRef": {"id": out.schema, "contentType": "application/vnd.adobe.xed-full+json;version=1"},
            "tags": PROFILE_TAGS}, existing)
        out.dataset = str(made[0]).rsplit("/", 1)[-1]
        out.created.append("dataset")
    return out
