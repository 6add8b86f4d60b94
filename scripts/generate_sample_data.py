"""Generate the bundled sample data: a Salesforce Contact export and an income-enrichment drop.

The output is deterministic (fixed seed), so the files in data/sample/ can be regenerated and
diffed: `python scripts/generate_sample_data.py data/sample`.

The Contact file has the column layout of a Salesforce Data Loader export ("Export All", so
deleted contacts appear with IsDeleted = true). The income file covers about 60% of contacts,
keyed by email as an enrichment vendor would deliver it.

Two contacts reproduce the seed architecture's example user-profile table:
U000001 is a loyalty_member with no income bracket, U000002 is expired with level_2.
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
    print(f"wrote {len(contact_rows)} contacts and {len(income_rows)} income rows to {out_dir}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "data/sample"))
