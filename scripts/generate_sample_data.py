"""Generate the bundled sample data: a Salesforce Contact export, an income-enrichment drop, a
product catalog and the historical orders of the sample's users.

The output is deterministic (fixed seed), so the files in data/sample/ can be regenerated and
diffed: `python scripts/generate_sample_data.py data/sample`.

The Contact file has the column layout of a Salesforce Data Loader export ("Export All", so
deleted contacts appear with IsDeleted = true). The income file covers about 60% of contacts,
keyed by email as an enrichment vendor would deliver it.

Two contacts reproduce the seed architecture's example user-profile table:
U000001 is a loyalty_member with no income bracket, U000002 is expired with level_2.

The catalog and orders come from their own random stream, so adding them left the contact and
income files unchanged. Orders have structure to learn from: each user favours one or two
categories, and a product is often bought with one of its few fixed companions.
"""

from __future__ import annotations

import csv
import random
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

SEED = 20240501
CONTACT_COUNT = 1000
INCOME_COVERAGE = 0.6
FIRST_NAMES = [
    "Ada",
    "Ben",
    "Chloe",
    "Dev",
    "Elena",
    "Farid",
    "Grace",
    "Hiro",
    "Ines",
    "Jonas",
    "Kira",
    "Luis",
    "Maya",
    "Noah",
    "Olga",
    "Priya",
    "Quinn",
    "Rosa",
    "Sam",
    "Tariq",
]
LAST_NAMES = [
    "Abbott",
    "Berg",
    "Costa",
    "Diaz",
    "Evans",
    "Fischer",
    "Garcia",
    "Haddad",
    "Ito",
    "Jensen",
    "Khan",
    "Lopez",
    "Moreau",
    "Nakamura",
    "Okafor",
    "Park",
    "Rossi",
    "Silva",
]
MEMBERSHIP = ["loyalty_member", "expired", "trial", "prospect"]
INCOME_BRACKETS = ["level_1", "level_2", "level_3", "level_4", "level_5"]
CONTACT_COLUMNS = [
    "Id",
    "Email",
    "FirstName",
    "LastName",
    "Membership_Status__c",
    "App_User_Id__c",
    "SystemModstamp",
    "IsDeleted",
]
INCOME_COLUMNS = ["email", "income_bracket", "enriched_at"]
EPOCH = datetime(2024, 5, 1, tzinfo=UTC)
CATALOG_SEED = SEED + 1
# Category: (price range, product nouns). 20 products each.
CATEGORIES = {
    "running": ((40, 220), ["Trail Shoe", "Road Shoe", "Running Sock", "Race Vest", "Cap"]),
    "outdoor": ((15, 450), ["Tent", "Sleeping Bag", "Headlamp", "Water Filter", "Stove"]),
    "kitchen": ((8, 300), ["Chef Knife", "Skillet", "Kettle", "Grinder", "Cutting Board"]),
    "books": ((9, 60), ["Cookbook", "Trail Guide", "Novel", "Field Manual", "Atlas"]),
    "electronics": ((20, 900), ["Headphones", "Watch", "Speaker", "Charger", "Camera"]),
    "beauty": ((6, 120), ["Sunscreen", "Balm", "Serum", "Shampoo", "Soap"]),
}
PRODUCTS_PER_CATEGORY = 20
MEMBER_ONLY_SHARE = 0.12
ADJECTIVES = ["Classic", "Light", "Pro", "Compact", "Alpine", "Urban", "Eco", "Prime"]
PRODUCT_COLUMNS = ["sku", "name", "category", "price", "member_only"]
ORDER_COLUMNS = ["order_id", "user_id", "sku", "ordered_at"]
COMPANIONS = 3


def salesforce_id(n: int) -> str:
    """An 18-character Contact Id ('003' key prefix), unique per n."""
    return f"003Dn00000{n:05d}AAA"


def export_datetime(moment: datetime) -> str:
    """Data Loader writes datetimes as ISO 8601 UTC with milliseconds and a Z."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def contacts(rng: random.Random) -> list[dict[str, str]]:
    rows = []
    for n in range(1, CONTACT_COUNT + 1):
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        modified = EPOCH + timedelta(minutes=rng.randrange(0, 60 * 24 * 180))
        rows.append(
            {
                "Id": salesforce_id(n),
                "Email": f"{first}.{last}.{n}@example.com".lower(),
                "FirstName": first,
                "LastName": last,
                "Membership_Status__c": rng.choices([*MEMBERSHIP, ""], weights=[4, 2, 2, 1, 1])[0],
                # About 2% of contacts were never linked to an app account.
                "App_User_Id__c": "" if rng.random() < 0.02 else f"U{n:06d}",
                "SystemModstamp": export_datetime(modified),
                "IsDeleted": "true" if rng.random() < 0.01 else "false",
            }
        )
    rows[0].update(
        Membership_Status__c="loyalty_member", App_User_Id__c="U000001", IsDeleted="false"
    )
    rows[1].update(Membership_Status__c="expired", App_User_Id__c="U000002", IsDeleted="false")
    return rows


def income(rng: random.Random, contact_rows: list[dict[str, str]]) -> list[dict[str, str]]:
    rows = []
    for contact in contact_rows:
        user = contact["App_User_Id__c"]
        covered = rng.random() < INCOME_COVERAGE
        if user == "U000001" or not (covered or user == "U000002"):
            continue
        bracket = "level_2" if user == "U000002" else rng.choice(INCOME_BRACKETS)
        enriched = EPOCH + timedelta(days=rng.randrange(0, 180))
        rows.append(
            {
                "email": contact["Email"],
                "income_bracket": bracket,
                "enriched_at": enriched.strftime("%Y-%m-%d"),
            }
        )
    return rows


def products(rng: random.Random) -> list[dict[str, str]]:
    rows = []
    for category, ((low, high), nouns) in CATEGORIES.items():
        for _ in range(PRODUCTS_PER_CATEGORY):
            # Prices spread log-uniformly, so each category has cheap and expensive products.
            price = low * (high / low) ** rng.random()
            rows.append(
                {
                    "sku": f"SKU-{len(rows) + 1}",
                    "name": f"{rng.choice(ADJECTIVES)} {rng.choice(nouns)} {len(rows) + 1}",
                    "category": category,
                    "price": f"{max(1, round(price)) - 0.01:.2f}",
                    "member_only": "true" if rng.random() < MEMBER_ONLY_SHARE else "false",
                }
            )
    return rows


def orders(
    rng: random.Random, contact_rows: list[dict[str, str]], product_rows: list[dict[str, str]]
) -> list[dict[str, str]]:
    """Line items of the linked, live contacts' past orders; both example users have some."""
    by_category: dict[str, list[str]] = {}
    for product in product_rows:
        by_category.setdefault(product["category"], []).append(product["sku"])
    # Each product's companions: mostly from its own category, one from anywhere.
    companions = {}
    for product in product_rows:
        own = [sku for sku in by_category[product["category"]] if sku != product["sku"]]
        anywhere = [p["sku"] for p in product_rows if p["sku"] != product["sku"]]
        picks = [*rng.sample(own, COMPANIONS - 1), rng.choice(anywhere)]
        companions[product["sku"]] = picks
    categories = list(by_category)
    rows = []
    order_count = 0
    for contact in contact_rows:
        user = contact["App_User_Id__c"]
        if not user or contact["IsDeleted"] == "true":
            continue
        favourites = rng.sample(categories, rng.choice([1, 2]))
        count = rng.choice([0, 1, 1, 2, 2, 3, 4])
        if user in ("U000001", "U000002"):
            count = max(count, 2)
        for _ in range(count):
            order_count += 1
            order_id = f"O{order_count:06d}"
            moment = EPOCH + timedelta(minutes=rng.randrange(0, 60 * 24 * 180))
            # Popular products first: a skewed pick within the favourite category.
            pool = by_category[rng.choice(favourites)]
            skus = [pool[min(int(rng.paretovariate(1.2)) - 1, len(pool) - 1)]]
            for _ in range(rng.choice([0, 1, 1, 2, 3])):
                if rng.random() < 0.6:
                    sku = rng.choice(companions[skus[-1]])
                else:
                    sku = rng.choice(by_category[rng.choice(favourites)])
                if sku not in skus:
                    skus.append(sku)
            rows.extend(
                {
                    "order_id": order_id,
                    "user_id": user,
                    "sku": sku,
                    "ordered_at": moment.strftime("%Y-%m-%dT%H:%M:%SZ"),
                }
                for sku in skus
            )
    return rows


def write_csv(path: Path, columns: list[str], rows: list[dict[str, str]]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def main(out_dir: Path) -> None:
    rng = random.Random(SEED)
    contact_rows = contacts(rng)
    income_rows = income(rng, contact_rows)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_csv(out_dir / "salesforce_contacts.csv", CONTACT_COLUMNS, contact_rows)
    write_csv(out_dir / "income_enrichment.csv", INCOME_COLUMNS, income_rows)
    catalog_rng = random.Random(CATALOG_SEED)
    product_rows = products(catalog_rng)
    order_rows = orders(catalog_rng, contact_rows, product_rows)
    write_csv(out_dir / "products.csv", PRODUCT_COLUMNS, product_rows)
    write_csv(out_dir / "orders.csv", ORDER_COLUMNS, order_rows)
    print(
        f"wrote {len(contact_rows)} contacts, {len(income_rows)} income rows, "
        f"{len(product_rows)} products and {len(order_rows)} order lines to {out_dir}"
    )


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "data/sample"))
