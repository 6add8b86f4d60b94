-- analytics.product_similarity: for each purchased SKU, its top_k most similar catalog
-- products by co-purchase (buyer_item_ids and item_buyers from purchase_history.sql).
--
-- Measure: cosine similarity over buyers,
--     similarity(a, b) = co_buyers(a, b) / sqrt(buyers(a) * buyers(b)),
-- where co_buyers counts the buyers who bought both (in any order, not only the same basket)
-- and buyers(x) those who bought x. Why cosine: raw co-buyer counts recommend the
-- bestsellers to everyone; lift (and observed-vs-expected) rewards rare pairs, so two
-- products one person bought together outrank real affinities; Jaccard divides by the
-- union, which sinks a niche product's neighbours that happen to be popular. Cosine scales
-- by both popularities geometrically, lies in (0, 1], and is the measure item-to-item
-- collaborative filtering (Amazon's) settled on. A pair needs at least min_co_buyers
-- co-buyers: one shared buyer is chance.
--
-- Neighbours must be in the catalog (they carry its category, price band and member_only
-- into Redis for the read path's rules); a SKU no longer sold still gets neighbours, since a
-- user who bought it is still a reason to recommend them. Ties: more co-buyers, then SKU.
--
-- Cost: co-buyers are symmetric, so each pair is counted once (lower sku_id first) on integer
-- ids and mirrored only after the minimum support has dropped most pairs; buyer counts,
-- catalog columns and SKU strings are joined to the few rows that survive.
CREATE OR REPLACE TABLE analytics.product_similarity AS
WITH pairs AS (
    SELECT a.sku_id AS low_id, b.sku_id AS high_id, count(*) AS co_buyers
    FROM buyer_item_ids AS a
    JOIN buyer_item_ids AS b ON a.buyer_id = b.buyer_id AND a.sku_id < b.sku_id
    GROUP BY a.sku_id, b.sku_id
    HAVING count(*) >= getvariable('min_co_buyers')
),
both_ways AS (
    SELECT low_id AS sku_id, high_id AS neighbour_id, co_buyers FROM pairs
    UNION ALL
    SELECT high_id, low_id, co_buyers FROM pairs
),
-- Rounded so that pairs equal in exact arithmetic tie (and fall to the tie-breaks) whatever
-- the floating point noise.
top AS (
    SELECT both_ways.*,
           round(both_ways.co_buyers / sqrt(anchor.buyers * neighbour.buyers), 9) AS similarity,
           CAST(row_number() OVER (
               PARTITION BY both_ways.sku_id
               ORDER BY similarity DESC, both_ways.co_buyers DESC, both_ways.neighbour_id
           ) AS INTEGER) AS rank
    FROM both_ways
    JOIN item_buyers AS anchor ON anchor.sku_id = both_ways.sku_id
    JOIN item_buyers AS neighbour ON neighbour.sku_id = both_ways.neighbour_id
    WHERE neighbour.in_catalog
    QUALIFY rank <= getvariable('top_k')
)
SELECT anchor.sku,
       top.rank,
       neighbour.sku AS neighbour_sku,
       top.similarity,
       top.co_buyers,
       catalog.category,
       catalog.price_band,
       catalog.member_only
FROM top
JOIN skus AS anchor ON anchor.sku_id = top.sku_id
JOIN skus AS neighbour ON neighbour.sku_id = top.neighbour_id
JOIN analytics.product_catalog AS catalog ON catalog.sku = neighbour.sku
ORDER BY top.sku_id, top.rank;
