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

-- analytics.profile_users: one row per app user, the users user_profiles holds: live contacts
-- with an app user id or linked to one by email. Each keeps its contact's columns (the Salesforce
-- trait source reads them here) and email_key, the email trait sources keyed by email match: the
-- contact's, or else the one the user last identified with.
CREATE OR REPLACE TABLE analytics.profile_users AS
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
identified AS (
    SELECT user_id, email
    FROM analytics.identities
    QUALIFY row_number() OVER (PARTITION BY user_id ORDER BY last_seen DESC, email) = 1
)
SELECT contacts.*,
       coalesce(lower(trim(contacts.email)), identified.email) AS email_key
FROM contacts
LEFT JOIN identified USING (user_id)
ORDER BY contacts.user_id;
