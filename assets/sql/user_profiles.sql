-- analytics.contact_email_links: live contacts without an app user id whose email app users
-- identified with (analytics.identities, from identify events). Exactly one such user: the
-- contact is linked to it. Several: the email is ambiguous and links nobody (user_id null).
CREATE OR REPLACE TABLE analytics.contact_email_links AS
SELECT contact.id AS contact_id,
       CASE WHEN count(*) = 1 THEN min(identity.user_id) END AS user_id,
       count(*) AS candidate_user_ids
FROM analytics.live_contacts AS contact
JOIN analytics.identities AS identity ON identity.email = lower(trim(contact.email))
WHERE NOT contact.has_user_id
GROUP BY contact.id;

-- analytics.user_profiles: one row per app user, the identify traits the profile sync sends.
-- Contacts left-joined to income enrichment (income_bracket is null where the vendor had none).
CREATE OR REPLACE TABLE analytics.user_profiles AS
WITH contacts AS (
    SELECT *
    FROM (
        SELECT contact.* REPLACE (coalesce(link.user_id, contact.user_id) AS user_id),
               link.user_id IS NOT NULL AS linked_by_email
        FROM analytics.live_contacts AS contact
        LEFT JOIN analytics.contact_email_links AS link ON link.contact_id = contact.id
        WHERE contact.has_user_id OR link.user_id IS NOT NULL
    )
    -- One app user linked to several contacts: a contact that carries the id beats one linked
    -- by email, then the most recently modified contact wins.
    QUALIFY row_number() OVER (
        PARTITION BY user_id ORDER BY linked_by_email, system_modstamp DESC, id
    ) = 1
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
