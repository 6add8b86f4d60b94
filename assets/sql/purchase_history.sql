-- What the recommendation model learns from: the connection's temp tables, no shared ones.
-- Run by personalization_pipeline/warehouse/recommendations.py, which sets the variables read
-- with getvariable(): purchase_events, max_items_per_order, max_items_per_user.

-- Every purchase line: purchase events (track events named in EVENTS_PURCHASE_EVENTS, SKUs in
-- properties.products[].sku else properties.sku, as the gateway reads them in
-- events/effects.py purchase_skus; string and integer SKUs) and the historical orders.
-- Anonymous purchases count with their anonymousId as the buyer.
CREATE OR REPLACE TEMP TABLE purchase_lines AS
WITH purchase_events AS (
    SELECT message_id,
           coalesce(user_id, 'anonymous:' || anonymous_id) AS buyer,
           "timestamp" AS ordered_at,
           CASE WHEN json_type(payload, '$.properties.products') = 'ARRAY'
                THEN json_extract(payload, '$.properties.products[*].sku')
                ELSE [json_extract(payload, '$.properties.sku')]
           END AS sku_values
    FROM raw.events
    WHERE type = 'track' AND list_contains(getvariable('purchase_events'), event)
)
SELECT *
FROM (
    SELECT 'event:' || message_id AS order_id, buyer,
           CASE WHEN json_type(sku_value) IN ('VARCHAR', 'BIGINT', 'UBIGINT')
                THEN sku_value ->> '$' END AS sku,
           ordered_at
    FROM purchase_events, unnest(sku_values) AS skus(sku_value)
)
WHERE sku <> ''
UNION ALL
SELECT 'order:' || order_id, user_id, sku, ordered_at
FROM raw.orders;

-- Integer surrogates for the purchased SKUs and the buyers: the self-join in
-- product_similarity.sql hashes, compares and groups tens of millions of pairs, which costs
-- several times more on strings. sku_id follows the SKU's own order, so a tie broken by
-- sku_id is broken by SKU; in_catalog says whether the SKU may be recommended (it is in
-- raw.products, the catalog product_catalog.sql prices).
CREATE OR REPLACE TEMP TABLE skus AS
SELECT sku, CAST(row_number() OVER (ORDER BY sku) AS INTEGER) AS sku_id,
       sku IN (SELECT sku FROM raw.products) AS in_catalog
FROM (SELECT DISTINCT sku FROM purchase_lines);

CREATE OR REPLACE TEMP TABLE buyers AS
SELECT buyer, CAST(row_number() OVER () AS INTEGER) AS buyer_id
FROM (SELECT DISTINCT buyer FROM purchase_lines);

-- The guards on the self-join below. An order with more than max_items_per_order distinct
-- SKUs (a wholesale or test order) says little about taste and is left out; each buyer keeps
-- only their max_items_per_user most recently bought SKUs. A buyer then adds at most
-- max_items_per_user * (max_items_per_user - 1) pairs, so no huge basket can explode the join.
-- Only orders with more lines than the cap can have more SKUs: counting lines first spares
-- the costlier distinct count for all the others.
CREATE OR REPLACE TEMP TABLE orders_over_cap AS
SELECT order_id
FROM purchase_lines
WHERE order_id IN (
    SELECT order_id FROM purchase_lines
    GROUP BY order_id
    HAVING count(*) > getvariable('max_items_per_order')
)
GROUP BY order_id
HAVING count(DISTINCT sku) > getvariable('max_items_per_order');

-- distinct_skus (before the per-buyer cap) is kept to count the buyers the cap cut short.
CREATE OR REPLACE TEMP TABLE buyer_item_ids AS
SELECT buyers.buyer_id, skus.sku_id, max(line.ordered_at) AS last_bought,
       count(*) OVER (PARTITION BY buyers.buyer_id) AS distinct_skus
FROM purchase_lines AS line
ANTI JOIN orders_over_cap USING (order_id)
JOIN skus USING (sku)
JOIN buyers USING (buyer)
GROUP BY buyers.buyer_id, skus.sku_id
QUALIFY row_number() OVER (
    PARTITION BY buyers.buyer_id ORDER BY max(line.ordered_at) DESC, skus.sku_id
) <= getvariable('max_items_per_user');

-- The same guarded history by name, for readers outside the model (the model's asset checks):
-- a view, so it costs nothing unless read.
CREATE OR REPLACE TEMP VIEW buyer_items AS
SELECT buyers.buyer, skus.sku, buyer_item_ids.last_bought
FROM buyer_item_ids
JOIN buyers USING (buyer_id)
JOIN skus USING (sku_id);

CREATE OR REPLACE TEMP TABLE item_buyers AS
SELECT skus.sku, skus.sku_id, skus.in_catalog, count(*) AS buyers
FROM buyer_item_ids
JOIN skus USING (sku_id)
GROUP BY ALL;
