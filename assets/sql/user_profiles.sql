-- analytics.user_profiles: one row per app user, the identify traits the profile sync sends.
-- Contacts left-joined to income enrichment (income_bracket is null where the vendor had none).
CREATE OR REPLACE TABLE analytics.user_profiles AS
WITH contacts AS (
    SELECT *
    FROM raw.salesforce_contact
    WHERE NOT is_deleted AND coalesce(trim(user_id), '') <> ''
    -- One app user linked to several contacts: the most recently modified contact wins.
    QUALIFY row_number() OVER (PARTITION BY user_id ORDER BY system_modstamp DESC, id) = 1
),
income AS (
    SELECT lower(email) AS email_key, income_bracket, enriched_at
    FROM raw.income_enrichment
    WHERE email IS NOT NULL
    -- One email (in any case) several times: the newest enriched_at wins, then the later line
    -- of the drop (the vendor's last word). income_enrichment counts and logs such conflicts.
    QUALIFY row_number() OVER (
        PARTITION BY lower(email) ORDER BY enriched_at DESC NULLS LAST, source_line DESC NULLS LAST
    ) = 1
)
SELECT
    contacts.user_id,
    contacts.email,
    contacts.membership_status,
    income.income_bracket,
    -- Deterministic (no now()): an unchanged profile keeps its updated_at across rebuilds.
    greatest(contacts.system_modstamp, CAST(income.enriched_at AS TIMESTAMP)) AS updated_at
FROM contacts
LEFT JOIN income ON lower(trim(contacts.email)) = income.email_key
ORDER BY contacts.user_id;
