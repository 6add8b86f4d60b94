-- analytics.product_similarity: for each purchased SKU, its top_k most similar catalog
-- products by co-purchase (buyer_items and item_buyers from purchase_history.sql).
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
CREATE OR REPLACE TABLE analytics.product_similarity AS
WITH pairs AS (
    SELECT a.sku, b.sku AS neighbour_sku, count(*) AS co_buyers
    FROM buyer_items AS a
    JOIN buyer_items AS b ON a.buyer = b.buyer AND a.sku <> b.sku
    WHERE b.sku IN (SELECT sku FROM analytics.product_catalog)
    GROUP BY a.sku, b.sku
    HAVING count(*) >= getvariable('min_co_buyers')
),
-- Rounded so that pairs equal in exact arithmetic tie (and fall to the tie-breaks) whatever
-- the floating point noise.
scored AS (
    SELECT pairs.*,
           round(pairs.co_buyers / sqrt(anchor.buyers * neighbour.buyers), 9) AS similarity
    FROM pairs
    JOIN item_buyers AS anchor ON anchor.sku = pairs.sku
    JOIN item_buyers AS neighbour ON neighbour.sku = pairs.neighbour_sku
)
SELECT scored.sku,
       CAST(row_number() OVER (
           PARTITION BY scored.sku
           ORDER BY scored.similarity DESC, scored.co_buyers DESC, scored.neighbour_sku
       ) AS INTEGER) AS rank,
       scored.neighbour_sku,
       scored.similarity,
       scored.co_buyers,
       catalog.category,
       catalog.price_band,
       catalog.member_only
FROM scored
JOIN analytics.product_catalog AS catalog ON catalog.sku = scored.neighbour_sku
QUALIFY rank <= getvariable('top_k')
ORDER BY scored.sku, rank;
