-- The cold-start lists: catalog products bought by the most distinct buyers (item_buyers from
-- purchase_history.sql), overall and within each category, top popular_n of each. Ties: the
-- SKU. Products nobody bought are in neither list.
CREATE OR REPLACE TABLE analytics.popular_products AS
SELECT CAST(row_number() OVER (ORDER BY buyers DESC, sku) AS INTEGER) AS rank,
       sku, buyers, category, price_band, member_only
FROM item_buyers
JOIN analytics.product_catalog USING (sku)
QUALIFY rank <= getvariable('popular_n')
ORDER BY rank;

CREATE OR REPLACE TABLE analytics.popular_products_by_category AS
SELECT category,
       CAST(row_number() OVER (PARTITION BY category ORDER BY buyers DESC, sku) AS INTEGER)
           AS rank,
       sku, buyers, price_band, member_only
FROM item_buyers
JOIN analytics.product_catalog USING (sku)
QUALIFY rank <= getvariable('popular_n')
ORDER BY category, rank;
