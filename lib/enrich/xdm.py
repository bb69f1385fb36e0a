"""XDM shapes this project reads: ExperienceEvents and profile snapshot rows.

These are the contracts of DESIGN.md. Real datasets may carry fewer fields (anything beyond
`_id`, `timestamp` and `identityMap` is optional) or more; the generator writes exactly these.
"""

from __future__ import annotations

from pyspark.sql.types import (
    ArrayType,
    BooleanType,
    DoubleType,
    IntegerType,
    LongType,
    MapType,
    StringType,
    StructField,
    StructType,
)

EVENT_PAGE_VIEW = "web.webpagedetails.pageViews"
EVENT_PRODUCT_VIEW = "commerce.productViews"
EVENT_CART_ADD = "commerce.productListAdds"
EVENT_CHECKOUT = "commerce.checkouts"
EVENT_PURCHASE = "commerce.purchases"

CHANNEL_WEB = "https://ns.adobe.com/xdm/channel-types/web"
CHANNEL_MOBILE = "https://ns.adobe.com/xdm/channel-types/mobile"

NS_ECID = "ECID"
NS_EMAIL = "Email"
NS_CRMID = "CRMID"

IDENTITY = StructType(
    [
        StructField("id", StringType()),
        StructField("authenticatedState", StringType()),
        StructField("primary", BooleanType()),
    ]
)
IDENTITY_MAP = MapType(StringType(), ArrayType(IDENTITY))


def _measure() -> StructType:
    return StructType([StructField("value", DoubleType())])


PRODUCT_CATEGORY = StructType(
    [StructField("categoryID", StringType()), StructField("categoryName", StringType())]
)
PRODUCT_LIST_ITEM = StructType(
    [
        StructField("SKU", StringType()),
        StructField("name", StringType()),
        StructField("quantity", LongType()),
        StructField("priceTotal", DoubleType()),
        StructField("productCategories", ArrayType(PRODUCT_CATEGORY)),
    ]
)
ORDER = StructType(
    [
        StructField("purchaseID", StringType()),
        StructField("priceTotal", DoubleType()),
        StructField("currencyCode", StringType()),
    ]
)
COMMERCE = StructType(
    [
        StructField("order", ORDER),
        StructField("purchases", _measure()),
        StructField("productViews", _measure()),
        StructField("productListAdds", _measure()),
        StructField("checkouts", _measure()),
    ]
)
WEB = StructType(
    [
        StructField(
            "webPageDetails",
            StructType(
                [
                    StructField("name", StringType()),
                    StructField("URL", StringType()),
                    StructField("pageViews", _measure()),
                ]
            ),
        )
    ]
)

EXPERIENCE_EVENT = StructType(
    [
        StructField("_id", StringType()),
        # ISO-8601 text as in JSON exports; readers also accept a timestamp column.
        StructField("timestamp", StringType()),
        StructField("eventType", StringType()),
        StructField("identityMap", IDENTITY_MAP),
        StructField("channel", StructType([StructField("_type", StringType())])),
        StructField("web", WEB),
        StructField("commerce", COMMERCE),
        StructField("productListItems", ArrayType(PRODUCT_LIST_ITEM)),
    ]
)

SEGMENT_MEMBERSHIP = MapType(
    StringType(),
    MapType(
        StringType(),
        StructType(
            [StructField("status", StringType()), StructField("lastQualificationTime", StringType())]
        ),
    ),
)

PROFILE_SNAPSHOT = StructType(
    [
        StructField("identityMap", IDENTITY_MAP),
        StructField(
            "person",
            StructType([StructField("gender", StringType()), StructField("birthYear", IntegerType())]),
        ),
        StructField("personalEmail", StructType([StructField("address", StringType())])),
        StructField("segmentMembership", SEGMENT_MEMBERSHIP),
        StructField("_repo", StructType([StructField("createDate", StringType())])),
    ]
)

# ISO-8601 as XDM writes it; parsed in UTC.
TIMESTAMP_FORMAT = "yyyy-MM-dd'T'HH:mm:ss.SSS'Z'"
