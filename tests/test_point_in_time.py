"""Point in time, as a property: nothing at or after D changes any feature as of D.

Hypothesis draws event logs before D, each with two different logs at or after D (so between the
runs events after D are added, deleted and changed), including new identity links, logins that
would merge profiles, re-used `_id`s and purchases exactly at D 00:00. The whole chain runs:
validation and de-duplication, identity graph, resolution, features.
"""

from __future__ import annotations

import datetime as dt

from enrich import identity, quality, xdm
from enrich.config import Config
from enrich.jobs.build_features import features_as_of
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

D = dt.date(2025, 3, 1)
D0 = dt.datetime(2025, 3, 1)
CLOCK = dt.datetime(2026, 1, 1)
CFG = Config.model_validate({"features": {"windows_days": [7, 30]}})
PRIORITY = CFG.identity.namespace_priority
KINDS = [xdm.EVENT_PAGE_VIEW, xdm.EVENT_PRODUCT_VIEW, xdm.EVENT_CART_ADD, xdm.EVENT_CHECKOUT, xdm.EVENT_PURCHASE]
SCHEMA = xdm.EXPERIENCE_EVENT


def event(draw, prefix: str, index: int, minutes: int, reuse_ids: list[str]) -> tuple:
    person = draw(st.integers(0, 3))
    device = f"ecid-{person}-{draw(st.integers(0, 1))}"
    identities = {"ECID": [(device, "ambiguous", True)]}
    login = draw(st.sampled_from([None, "own", "other"]))
    if login:
        crm = person if login == "own" else draw(st.integers(0, 4))
        identities["CRMID"] = [(f"crm-{crm}", "authenticated", False)]
    kind = draw(st.sampled_from(KINDS))
    price = round(draw(st.floats(1, 500)), 2) if kind == xdm.EVENT_PURCHASE else None
    category = draw(st.sampled_from(["Books", "Garden", "Toys"]))
    ts = (D0 + dt.timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    event_id = draw(st.sampled_from(reuse_ids)) if reuse_ids and draw(st.booleans()) else f"{prefix}{index}"
    commerce = ((f"o-{prefix}{index}", price, "USD"), (1.0,) if price else None, None, None, None)
    items = [("sku", "item", 1, price or 10.0, [("c", category)])]
    return (event_id, ts, kind, identities, None, None, commerce if price else None, items)


@st.composite
def logs(draw):
    before = [event(draw, "b", i, -draw(st.integers(1, 60 * 24 * 45)), []) for i in range(draw(st.integers(1, 12)))]
    ids = [row[0] for row in before]

    def after(prefix: str) -> list[tuple]:
        # Minute 0 is exactly D 00:00: it belongs to the future.
        n = draw(st.integers(0, 8))
        return [event(draw, prefix, i, draw(st.integers(0, 60 * 24 * 20)), ids) for i in range(n)]

    return before, after("x"), after("y")


SNAPSHOT = [({"CRMID": [(f"crm-{p}", "authenticated", True)], "ECID": [(f"ecid-{p}-0", "ambiguous", False)]},
             None, None, None, ("2024-01-01T00:00:00.000Z",)) for p in range(3)]


def tagged(tag: str, rows: list[tuple]) -> list[tuple]:
    """A copy of an event log whose ids and identities cannot meet another copy's."""
    out = []
    for event_id, ts, kind, identities, channel, web, commerce, items in rows:
        ids = {ns: [(f"{tag}|{i}", s, p) for i, s, p in values] for ns, values in identities.items()}
        out.append((f"{tag}|{event_id}", ts, kind, ids, channel, web, commerce, items))
    return out


def features(spark, logs: dict[str, list[tuple]]) -> dict[str, dict[str, dict]]:
    """Features as of D for several logs in one run: tag -> primary identity -> feature row."""
    raw = spark.createDataFrame([row for tag, rows in logs.items() for row in tagged(tag, rows)], SCHEMA)
    snapshot = [({ns: [(f"{tag}|{i}", s, p) for i, s, p in values] for ns, values in ids.items()}, *rest)
                for tag in logs for ids, *rest in SNAPSHOT]
    valid = raw.transform(quality.validate_events(CLOCK)).where("reason IS NULL").drop("reason", "raw")
    profiles = identity.snapshot_profiles(spark.createDataFrame(snapshot, xdm.PROFILE_SNAPSHOT), PRIORITY)
    built, _ = features_as_of(valid, profiles, identity.event_links(valid), D, CFG)
    result: dict[str, dict[str, dict]] = {tag: {} for tag in logs}
    for row in built.collect():
        values = row.asDict()
        tag, primary = values.pop("primary_id").split("|", 1)
        values.pop("profile_id")  # a hash of the tagged identity
        result[tag][primary] = values
    return result


def same(a: dict[str, dict], b: dict[str, dict]) -> bool:
    if a.keys() != b.keys():
        return False
    for key, row in a.items():
        for column, value in row.items():
            other = b[key][column]
            if isinstance(value, float) and isinstance(other, float):
                if abs(value - other) > 1e-9 * max(1.0, abs(value)):
                    return False
            elif isinstance(value, dict):
                if value.keys() != other.keys() or any(abs(value[k] - other[k]) > 1e-9 for k in value):
                    return False
            elif value != other:
                return False
    return True


@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(batch=st.lists(logs(), min_size=3, max_size=5))
def test_events_at_or_after_d_change_no_feature_as_of_d(spark, batch):
    """Several drawn logs per run (their tags keep them apart): each one's past alone, and with each of
    its two futures, gives the same features as of D."""
    runs = {f"{i}.{name}": rows for i, (before, future_a, future_b) in enumerate(batch)
            for name, rows in (("base", before), ("a", before + future_a), ("b", before + future_b))}
    got = features(spark, runs)
    for i in range(len(batch)):
        assert got[f"{i}.base"]  # every snapshot profile has a row
        assert same(got[f"{i}.a"], got[f"{i}.base"])
        assert same(got[f"{i}.b"], got[f"{i}.base"])
