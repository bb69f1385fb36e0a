"""Synthetic XDM data with known truth, generated inside Spark.

Every person has latent traits, drawn once: when they arrive, how often they visit, how likely a
visit ends in a purchase, how much they spend, when they churn (an exponential lifetime), which
categories they prefer, whether they use a second device and how often they log in. Their visits
are a Poisson process over their active life (count drawn exactly, times uniform), and each visit
is a funnel of page views, product views, a cart add, a checkout and a purchase. Because the
latents are kept (the truth table), later stages can compare a model with the best possible one:
`true_outcomes` gives, for any date and horizon, each person's true purchase probability and
expected spend.

Randomness is a hash of (seed, salt, keys), never `rand()`: the data is the same for a seed however
Spark partitions it, and nothing is collected to the driver, so size is bounded by the cluster.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import DoubleType

from enrich import xdm
from enrich.config import GenerateConfig

CATEGORIES: tuple[str, ...] = (
    "Electronics", "Apparel", "Home & Kitchen", "Beauty", "Sports & Outdoors", "Toys & Games",
    "Books", "Grocery", "Garden", "Jewelry", "Automotive", "Pet Supplies",
)
PRODUCTS_PER_CATEGORY = 200
DAY = 86_400.0
# Above this mean, a Poisson count is drawn from its normal approximation (exact below).
_POISSON_EXACT_MAX = 500.0


# ---------------------------------------------------------------------------------------------
# Column helpers: deterministic random variables from hashes


def uniform(seed: int, salt: str, *keys: Column) -> Column:
    """Uniform on (0, 1), a pure function of (seed, salt, keys)."""
    bits = F.pmod(F.xxhash64(F.lit(seed), F.lit(salt), *keys), F.lit(1 << 53))
    return (bits.cast(DoubleType()) + 0.5) / float(1 << 53)


def normal(seed: int, salt: str, *keys: Column) -> Column:
    """Standard normal by Box-Muller from two independent uniforms."""
    u1 = uniform(seed, salt + ":1", *keys)
    u2 = uniform(seed, salt + ":2", *keys)
    return F.sqrt(-2.0 * F.log(u1)) * F.cos(2.0 * math.pi * u2)


def exponential(u: Column) -> Column:
    """Exponential(1) from a uniform."""
    return -F.log(u)


def poisson(mean: Column, u: Column, z: Column) -> Column:
    """Poisson(mean) by inverse CDF of `u` (exact up to a mean of 500, where the normal draw `z`
    takes over through the normal approximation), as a native higher-order expression."""
    kmax = F.ceil(mean + 10.0 * F.sqrt(mean) + 10.0).cast("int")
    p0 = F.exp(-mean)
    start = F.struct(p0.alias("p"), p0.alias("cdf"), F.when(u <= p0, F.lit(0)).alias("n"))

    def step(acc: Column, k: Column) -> Column:
        p = acc["p"] * mean / k
        cdf = acc["cdf"] + p
        return F.struct(p.alias("p"), cdf.alias("cdf"), F.coalesce(acc["n"], F.when(u <= cdf, k)).alias("n"))

    exact = F.coalesce(F.aggregate(F.sequence(F.lit(1), kmax), start, step)["n"], kmax)
    approx = F.greatest(F.lit(0), F.round(mean + F.sqrt(mean) * z).cast("int"))
    return F.when(mean <= 0, F.lit(0)).when(mean <= _POISSON_EXACT_MAX, exact).otherwise(approx)


def _digits(seed: int, salt: str, *keys: Column) -> Column:
    """19 pseudo-random decimal digits."""
    value = F.pmod(F.xxhash64(F.lit(seed), F.lit(salt), *keys), F.lit(10**18))
    return F.lpad(value.cast("string"), 19, "0")


def _digest(*parts: Column) -> Column:
    return F.sha2(F.concat_ws(":", *[p.cast("string") for p in parts]), 256)


def _uuid_from_digest(digest: Column) -> Column:
    """UUID-shaped text from a hex digest (compute the digest in an earlier projection: it is
    referenced five times, and Spark only shares it across projections)."""
    return F.concat_ws("-", *[F.substring(digest, start, length) for start, length in
                              ((1, 8), (9, 4), (13, 4), (17, 4), (21, 12))])


def _identity(value: Column, state: str, primary: bool) -> Column:
    """One XDM identity: {id, authenticatedState, primary}."""
    return F.struct(value.alias("id"), F.lit(state).alias("authenticatedState"), F.lit(primary).alias("primary"))


def _epoch(day: dt.date) -> float:
    return float(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp())


def _iso(seconds: Column) -> Column:
    return F.date_format(F.timestamp_seconds(seconds), xdm.TIMESTAMP_FORMAT)


def _category_name(index: Column) -> Column:
    return F.element_at(F.array(*[F.lit(c) for c in CATEGORIES]), index + 1)


def _pick_category(seed: int, salt: str, *keys: Column) -> Column:
    """A person's category for one interaction: favourite 60%, second 25%, any 15%."""
    u = uniform(seed, salt, *keys)
    anyone = F.floor(uniform(seed, salt + ":any", *keys) * len(CATEGORIES)).cast("int")
    return F.when(u < 0.60, F.col("fav1")).when(u < 0.85, F.col("fav2")).otherwise(anyone)


def _item(category: Column, product: Column, price: Column, quantity: Column) -> Column:
    """An XDM productListItem. `category` and `product` should be plain column references."""
    return F.struct(
        F.format_string("SKU-%02d-%04d", category, product).alias("SKU"),
        F.format_string("%s item %d", _category_name(category), product).alias("name"),
        quantity.cast("long").alias("quantity"),
        F.round(price, 2).alias("priceTotal"),
        F.array(
            F.struct(
                F.format_string("C%02d", category).alias("categoryID"),
                _category_name(category).alias("categoryName"),
            )
        ).alias("productCategories"),
    )


def _list_price(seed: int, category: Column, product: Column) -> Column:
    return F.exp(math.log(40.0) + 0.6 * normal(seed, "price", category, product))


# ---------------------------------------------------------------------------------------------
# People: latent traits


def people(spark: SparkSession, cfg: GenerateConfig) -> DataFrame:
    """One row per synthetic person with identities and latent traits (the truth)."""
    s = cfg.seed
    pid = F.col("person_id")
    range_start, range_end = _epoch(cfg.start_date), _epoch(cfg.end_date)
    span = range_end - range_start
    partitions = max(2, math.ceil(cfg.profiles / 2500))

    def u(salt: str) -> Column:
        return uniform(s, salt, pid)

    def z(salt: str) -> Column:
        return normal(s, salt, pid)

    base = spark.range(0, cfg.profiles, numPartitions=partitions).withColumnRenamed("id", "person_id")
    # Columns used several times are computed in a projection of their own, once.
    base = base.select(pid, (u("known") >= cfg.anonymous_fraction).alias("known"),
                       (u("existing") < 0.5).alias("existing"))
    known = F.col("known")
    existing = F.col("existing")
    df = base.select(
        pid,
        F.format_string("P%09d", pid).alias("profile_key"),
        known,
        (known & (u("device2") < cfg.second_device_fraction)).alias("two_devices"),
        _digits(s, "ecid1a", pid).alias("_e1a"), _digits(s, "ecid1b", pid).alias("_e1b"),
        _digits(s, "ecid2a", pid).alias("_e2a"), _digits(s, "ecid2b", pid).alias("_e2b"),
        F.when(known, F.format_string("CRM%09d", pid)).alias("crm_id"),
        F.when(known & (u("email") < 0.8), F.format_string("user%d@example.com", pid)).alias("email"),
        # Half are customers already active on day one, half arrive during the first 80%.
        F.when(existing, F.lit(range_start)).otherwise(range_start + u("arrival") * 0.8 * span).alias("start_s"),
        existing,
        # A fragile third churns within months, the rest within years.
        (F.when(u("fragile") < 0.35, 1.0 / 90.0).otherwise(1.0 / 1200.0) * F.exp(0.3 * z("hazard")))
        .alias("churn_hazard"),
        (cfg.sessions_per_month / 30.0 * F.exp(0.7 * z("rate"))).alias("session_rate"),
        (F.when(known, 1.0).otherwise(0.5) / (1.0 + F.exp(2.3 - 0.8 * z("conversion"))))
        .alias("conversion_rate"),
        (math.log(60.0) + 0.5 * z("spend")).alias("order_value_mu"),
        F.lit(0.35).alias("order_value_sigma"),
        F.floor(u("cat1") * len(CATEGORIES)).cast("int").alias("fav1"),
        F.floor(u("cat2") * (len(CATEGORIES) - 1)).cast("int").alias("_cat2"),
        u("mobile").alias("_mobile"),
        F.when(known, 0.3 + 0.6 * u("login")).otherwise(0.0).alias("login_prob"),
        u("lifetime").alias("_lifetime"),
        u("sessions").alias("_sessions"),
        z("sessions").alias("_sessions_z"),
        u("tenure").alias("_tenure"),
    )
    return (
        df.withColumn("ecid1", F.concat("_e1a", "_e1b"))
        .withColumn("ecid2", F.when(F.col("two_devices"), F.concat("_e2a", "_e2b")))
        .withColumn("ecid2_listed", F.col("two_devices") & (u("unlisted") >= cfg.unlisted_device_fraction))
        .withColumn("email_hash", F.sha2(F.lower("email"), 256))
        .withColumn("fav2", F.pmod(F.col("fav1") + 1 + F.col("_cat2"), F.lit(len(CATEGORIES))))
        .withColumn("mobile_share", F.when(F.col("two_devices"), F.col("_mobile")).otherwise(0.0))
        .withColumn("churn_s", F.col("start_s") + exponential(F.col("_lifetime")) / F.col("churn_hazard") * DAY)
        .withColumn("alive_end_s", F.least(F.col("churn_s"), F.lit(range_end)))
        .withColumn(
            "created_s",
            F.when(F.col("existing"), F.col("start_s") - F.col("_tenure") * 3 * 365 * DAY)
            .otherwise(F.col("start_s")),
        )
        .withColumn("purchase_rate", F.col("session_rate") * F.col("conversion_rate"))
        .withColumn(
            "expected_sessions",
            F.col("session_rate") * F.greatest(F.lit(0.0), F.col("alive_end_s") - F.col("start_s")) / DAY,
        )
        .withColumn("n_sessions", poisson(F.col("expected_sessions"), F.col("_sessions"), F.col("_sessions_z")))
        .drop("_e1a", "_e1b", "_e2a", "_e2b", "_cat2", "_mobile", "_lifetime", "_sessions", "_sessions_z", "_tenure")
    )


# ---------------------------------------------------------------------------------------------
# Events


_EVENT_TYPES = {
    "page": xdm.EVENT_PAGE_VIEW,
    "product": xdm.EVENT_PRODUCT_VIEW,
    "cart": xdm.EVENT_CART_ADD,
    "checkout": xdm.EVENT_CHECKOUT,
    "purchase": xdm.EVENT_PURCHASE,
}


def _sessions(persons: DataFrame, seed: int) -> DataFrame:
    s = seed
    keys = (F.col("person_id"), F.col("session"))

    def u(salt: str) -> Column:
        return uniform(s, salt, *keys)

    n = F.col("n_sessions")
    exploded = persons.withColumn(
        "session", F.explode(F.when(n > 0, F.sequence(F.lit(0), n - 1)).otherwise(F.array().cast("array<int>")))
    )
    conv = F.col("conversion_rate")
    exploded = exploded.withColumn("purchase", u("buy") < conv)
    exploded = exploded.withColumn("cart", F.col("purchase") | (u("cart") < F.least(F.lit(0.6), 2.5 * conv)))
    cart = F.col("cart")
    return exploded.select(
        "*",
        (F.col("start_s") + u("time") * (F.col("alive_end_s") - F.col("start_s"))).alias("session_s"),
        (u("device") < F.col("mobile_share")).alias("mobile"),
        (u("login") < F.col("login_prob")).alias("logged_in"),
        (u("crm") < 0.9).alias("_crm_pick"),
        (u("mail") < 0.5).alias("_mail_pick"),
        (F.col("purchase") | (cart & (u("checkout") < 0.3))).alias("checkout"),
        (1 + F.floor(exponential(u("pages")) * 1.5)).cast("int").alias("n_pages"),
        F.greatest(cart.cast("int"), F.floor(exponential(u("products")) * 1.2).cast("int")).alias("n_products"),
        (20.0 + u("step") * 160.0).alias("step_s"),
        _pick_category(s, "focus_cat", *keys).alias("focus_cat"),
        F.floor(u("focus_product") * PRODUCTS_PER_CATEGORY).cast("int").alias("focus_product"),
        F.least(F.lit(3), 1 + F.floor(exponential(u("items")) * 0.5)).cast("int").alias("n_items"),
        F.exp(F.col("order_value_mu") + F.col("order_value_sigma") * normal(s, "order", *keys)).alias("order_total"),
    )


def _identity_map(session: DataFrame) -> Column:
    logged_in = F.col("logged_in")
    has_email = F.col("email_hash").isNotNull()
    with_crm = logged_in & (F.col("_crm_pick") | ~has_email)
    with_email = logged_in & has_email & (F.col("_mail_pick") | ~with_crm)
    ecid = F.when(F.col("mobile"), F.col("ecid2")).otherwise(F.col("ecid1"))

    def entry(namespace: str, value: Column, state: str, primary: bool) -> Column:
        return F.struct(F.lit(namespace).alias("key"), F.array(_identity(value, state, primary)).alias("value"))

    entries = F.array(
        entry(xdm.NS_ECID, ecid, "ambiguous", True),
        F.when(with_crm, entry(xdm.NS_CRMID, F.col("crm_id"), "authenticated", False)),
        F.when(with_email, entry(xdm.NS_EMAIL, F.col("email_hash"), "authenticated", False)),
    )
    return F.map_from_entries(F.filter(entries, lambda e: e.isNotNull()))


def clean_events(persons: DataFrame, seed: int) -> DataFrame:
    """Valid XDM ExperienceEvents of every person's sessions (the funnel of each visit)."""
    s = seed
    sessions = _sessions(persons, seed)
    kinds = F.concat(
        F.array_repeat(F.lit("page"), F.col("n_pages")),
        F.array_repeat(F.lit("product"), F.col("n_products")),
        F.when(F.col("cart"), F.array(F.lit("cart"))).otherwise(F.array().cast("array<string>")),
        F.when(F.col("checkout"), F.array(F.lit("checkout"))).otherwise(F.array().cast("array<string>")),
        F.when(F.col("purchase"), F.array(F.lit("purchase"))).otherwise(F.array().cast("array<string>")),
    )
    ev = sessions.select("*", F.posexplode(kinds).alias("idx", "kind"))
    ev = ev.withColumn("event_s", F.col("session_s") + F.col("idx") * F.col("step_s"))
    # A visit in progress when the person churns (or the period ends) is cut there.
    ev = ev.where(F.col("event_s") < F.col("alive_end_s"))

    keys = (F.col("person_id"), F.col("session"), F.col("idx"))
    first_product = F.col("idx") == F.col("n_pages")
    # Stage 1: every random choice of the event, computed once (later stages only reference it).
    order_choice = F.transform(F.sequence(F.lit(0), F.col("n_items") - 1), lambda i: F.struct(
        F.when(i == 0, F.col("focus_cat")).otherwise(
            _pick_category(s, "order_cat", F.col("person_id"), F.col("session"), i)).alias("cat"),
        F.when(i == 0, F.col("focus_product")).otherwise(F.floor(
            uniform(s, "order_product", F.col("person_id"), F.col("session"), i) * PRODUCTS_PER_CATEGORY
        ).cast("int")).alias("product"),
    ))
    ev = ev.select(
        "*",
        _digest(F.lit(s), *keys).alias("_digest"),
        F.when(first_product | (F.col("kind") == "cart"), F.col("focus_cat"))
        .otherwise(_pick_category(s, "view_cat", *keys)).alias("item_cat"),
        F.when(first_product | (F.col("kind") == "cart"), F.col("focus_product"))
        .otherwise(F.floor(uniform(s, "view_product", *keys) * PRODUCTS_PER_CATEGORY).cast("int"))
        .alias("item_product"),
        _pick_category(s, "page_cat", *keys).alias("page_cat"),
        F.when(F.col("kind").isin("checkout", "purchase"), order_choice).alias("order_choice"),
    )
    ev = ev.withColumn("item_price", _list_price(s, F.col("item_cat"), F.col("item_product")))

    # Stage 2: the XDM shape.
    kind = F.col("kind")
    item_share = F.col("order_total") / F.col("n_items")
    single_item = F.array(_item(F.col("item_cat"), F.col("item_product"), F.col("item_price"), F.lit(1)))
    order_items = F.transform("order_choice", lambda c: _item(c["cat"], c["product"], item_share, F.lit(1)))
    items = F.when(kind.isin("product", "cart"), single_item).when(kind.isin("checkout", "purchase"), order_items)
    one = F.struct(F.lit(1.0).alias("value"))
    no_measure = F.lit(None).cast("struct<value:double>")
    order_id = F.format_string("ORD-%d-%d-%d", F.lit(s), F.col("person_id"), F.col("session"))
    commerce = F.when(
        kind != "page",
        F.struct(
            F.when(kind == "purchase", F.struct(
                order_id.alias("purchaseID"),
                F.round(F.col("order_total"), 2).alias("priceTotal"),
                F.lit("USD").alias("currencyCode"),
            )).alias("order"),
            F.when(kind == "purchase", one).otherwise(no_measure).alias("purchases"),
            F.when(kind == "product", one).otherwise(no_measure).alias("productViews"),
            F.when(kind == "cart", one).otherwise(no_measure).alias("productListAdds"),
            F.when(kind == "checkout", one).otherwise(no_measure).alias("checkouts"),
        ),
    )
    home = F.col("idx") == 0
    page_name = F.when(home, F.lit("home")).otherwise(F.concat(F.lit("category:"), _category_name(F.col("page_cat"))))
    page_url = F.when(home, F.lit("https://shop.example.com/")).otherwise(
        F.format_string("https://shop.example.com/c/C%02d", F.col("page_cat"))
    )
    web = F.when(kind == "page", F.struct(F.struct(
        page_name.alias("name"), page_url.alias("URL"), one.alias("pageViews")).alias("webPageDetails")))
    event_type = F.element_at(F.create_map(*[x for k, v in _EVENT_TYPES.items() for x in (F.lit(k), F.lit(v))]), kind)
    channel_type = F.when(F.col("mobile"), F.lit(xdm.CHANNEL_MOBILE)).otherwise(F.lit(xdm.CHANNEL_WEB))
    channel = F.struct(channel_type.alias("_type"))
    return ev.select(
        _uuid_from_digest(F.col("_digest")).alias("_id"),
        _iso(F.col("event_s")).alias("timestamp"),
        event_type.alias("eventType"),
        _identity_map(ev).alias("identityMap"),
        channel.alias("channel"),
        web.alias("web"),
        commerce.alias("commerce"),
        items.alias("productListItems"),
    )


DIRTY_KINDS: tuple[str, ...] = (
    "null_identity_map", "empty_identity_map", "unparseable_timestamp", "missing_timestamp",
    "future_timestamp", "negative_price", "null_price", "duplicate_id",
)


def dirty_events(events: DataFrame, cfg: GenerateConfig) -> DataFrame:
    """Corrupt copies of a sample of events, so that about `dirty_fraction` of all rows are bad.

    They are extra rows (the clean events stay exactly the truth), one corruption each, in equal
    shares; `dirty_kind` names it (the caller drops it before writing).
    """
    s = cfg.seed
    f = cfg.dirty_fraction
    rate = f / (1.0 - f)
    key = F.col("_id")
    picked = events.where(uniform(s, "dirty", key) < rate)
    kind_index = F.floor(uniform(s, "dirty_kind", key) * len(DIRTY_KINDS)).cast("int")
    kind = F.element_at(F.array(*[F.lit(k) for k in DIRTY_KINDS]), kind_index + 1)
    picked = picked.withColumn("dirty_kind", kind)
    k = F.col("dirty_kind")
    ts = F.to_timestamp(F.col("timestamp"), xdm.TIMESTAMP_FORMAT)
    order_price = F.col("commerce.order.priceTotal")
    price = F.coalesce(order_price, F.lit(49.99))
    bad_price = F.when(k == "negative_price", -F.abs(price))  # null for "null_price"
    bad_order = F.struct(
        F.struct(
            F.coalesce(F.col("commerce.order.purchaseID"), F.concat(F.lit("ORD-X-"), key)).alias("purchaseID"),
            bad_price.cast("double").alias("priceTotal"),
            F.lit("USD").alias("currencyCode"),
        ).alias("order"),
        F.struct(F.lit(1.0).alias("value")).alias("purchases"),
        F.col("commerce.productViews").alias("productViews"),
        F.col("commerce.productListAdds").alias("productListAdds"),
        F.col("commerce.checkouts").alias("checkouts"),
    )
    price_kind = k.isin("negative_price", "null_price")
    empty_map = F.create_map().cast(xdm.IDENTITY_MAP)
    return picked.select(
        F.when(k == "duplicate_id", key).otherwise(_uuid_from_digest(_digest(key, F.lit("dirty")))).alias("_id"),
        F.when(k == "unparseable_timestamp", F.date_format(ts, "MM/dd/yyyy HH:mm"))
        .when(k == "missing_timestamp", F.lit(None).cast("string"))
        .when(k == "future_timestamp",
              _iso(F.unix_timestamp(ts) + (5 + 5 * uniform(s, "future", key)) * 365 * DAY))
        .otherwise(F.col("timestamp")).alias("timestamp"),
        F.when(price_kind, F.lit(xdm.EVENT_PURCHASE)).otherwise(F.col("eventType")).alias("eventType"),
        F.when(k == "null_identity_map", F.lit(None).cast(xdm.IDENTITY_MAP))
        .when(k == "empty_identity_map", empty_map)
        .otherwise(F.col("identityMap")).alias("identityMap"),
        "channel",
        "web",
        F.when(price_kind, bad_order).otherwise(F.col("commerce")).alias("commerce"),
        "productListItems",
        "dirty_kind",
    )


def events(persons: DataFrame, cfg: GenerateConfig) -> DataFrame:
    """All generated events, clean and dirty; `dirty_kind` is null on clean rows."""
    clean = clean_events(persons, cfg.seed)
    dirty = dirty_events(clean, cfg)
    return clean.withColumn("dirty_kind", F.lit(None).cast("string")).unionByName(dirty)


# ---------------------------------------------------------------------------------------------
# Profile snapshot and truth


def snapshot(persons: DataFrame, seed: int) -> DataFrame:
    """XDM profile snapshot: one row per known person with their identities (a second device only
    when it is listed: `generate.unlisted_device_fraction`)."""
    pid = F.col("person_id")

    entries = F.array(
        F.struct(F.lit(xdm.NS_CRMID).alias("key"),
                 F.array(_identity(F.col("crm_id"), "authenticated", True)).alias("value")),
        F.when(F.col("email_hash").isNotNull(), F.struct(
            F.lit(xdm.NS_EMAIL).alias("key"),
            F.array(_identity(F.col("email_hash"), "authenticated", False)).alias("value"))),
        F.struct(F.lit(xdm.NS_ECID).alias("key"), F.filter(F.array(
            _identity(F.col("ecid1"), "ambiguous", False),
            F.when(F.col("ecid2_listed"), _identity(F.col("ecid2"), "ambiguous", False)),
        ), lambda e: e.isNotNull()).alias("value")),
    )
    created = F.col("created_s")

    def segment(name: str, member: Column) -> Column:
        qualified = created + uniform(seed, "seg:" + name, pid) * 60 * DAY
        return F.when(member, F.struct(F.lit(name).alias("key"), F.struct(
            F.lit("realized").alias("status"), _iso(qualified).alias("lastQualificationTime")).alias("value")))

    segments = F.map_from_entries(F.filter(F.array(
        segment("newsletter-subscribers", uniform(seed, "newsletter", pid) < 0.4),
        segment("loyalty-members", uniform(seed, "loyalty", pid) < 0.25),
        segment("app-users", F.col("two_devices")),
    ), lambda e: e.isNotNull()))
    gender = uniform(seed, "gender", pid)
    return persons.where("known").select(
        F.map_from_entries(F.filter(entries, lambda e: e.isNotNull())).alias("identityMap"),
        F.struct(
            F.when(gender < 0.48, "female").when(gender < 0.96, "male").otherwise("not_specified").alias("gender"),
            (1950 + F.floor(uniform(seed, "birth", pid) * 55)).cast("int").alias("birthYear"),
        ).alias("person"),
        F.when(F.col("email").isNotNull(), F.struct(F.col("email").alias("address"))).alias("personalEmail"),
        F.create_map(F.lit("ups"), segments).alias("segmentMembership"),
        F.struct(_iso(created).alias("createDate")).alias("_repo"),
    )


def truth(persons: DataFrame, cfg: GenerateConfig) -> DataFrame:
    """The latent traits of every person, for comparing models with the best possible one."""
    return persons.select(
        "profile_key", "person_id", "known", "crm_id", "email_hash",
        F.filter(F.array("ecid1", "ecid2"), lambda e: e.isNotNull()).alias("ecids"),
        F.timestamp_seconds("start_s").alias("start_ts"),
        F.timestamp_seconds("churn_s").alias("churn_ts"),
        (F.col("churn_s") < _epoch(cfg.end_date)).alias("churned"),
        "churn_hazard", "session_rate", "conversion_rate", "purchase_rate",
        "order_value_mu", "order_value_sigma",
        F.exp(F.col("order_value_mu") + F.col("order_value_sigma") ** 2 / 2).alias("expected_order_value"),
        _category_name(F.col("fav1")).alias("favorite_category"),
        _category_name(F.col("fav2")).alias("second_category"),
        "two_devices", "mobile_share", "login_prob", "expected_sessions", "n_sessions",
    )


def true_outcomes(as_of: dt.date, horizon_days: int, end_date: dt.date) -> Callable[[DataFrame], DataFrame]:
    """Transform of the truth table: each person's true outcome distribution in [D, D + horizon).

    Purchases are a Poisson process of rate `purchase_rate` while the person is active, so with
    `a` active days in the window the count is Poisson(rate * a): P(any purchase) = 1 - exp(-rate*a),
    expected spend = rate * a * expected order value, expected purchase days = a * (1 - exp(-rate)).
    The window is cut at the end of the data.
    """
    d0 = _epoch(as_of)
    d1 = min(d0 + horizon_days * DAY, _epoch(end_date))

    def transform(truth_df: DataFrame) -> DataFrame:
        start = F.unix_timestamp("start_ts").cast("double")
        churn = F.col("churn_ts").cast("double")
        active_days = F.greatest(F.lit(0.0), F.least(churn, F.lit(d1)) - F.greatest(start, F.lit(d0))) / DAY
        expected = F.col("purchase_rate") * active_days
        return truth_df.select(
            "profile_key",
            F.lit(as_of).alias("as_of_date"),
            ((start <= d0) & (churn > d0)).alias("active_at_as_of"),
            active_days.alias("active_days_in_window"),
            expected.alias("expected_purchases"),
            # Days with at least one purchase: each active day's count is Poisson(rate).
            (active_days * (1.0 - F.exp(-F.col("purchase_rate")))).alias("expected_purchase_days"),
            (1.0 - F.exp(-expected)).alias("p_purchase"),
            (expected * F.col("expected_order_value")).alias("expected_spend"),
        )

    return transform
