-- What the model recommends. Run by personalization_pipeline/warehouse/recommendations.py,
-- which sets the variable price_bands.

-- analytics.product_catalog: the catalog with each product's price band, 1 (cheapest) to
-- price_bands, by price rank within its category (a cheap TV still costs more than a dear
-- sock). Equal prices share a band; a category of n products spreads over min(n, bands).
CREATE OR REPLACE TABLE analytics.product_catalog AS
SELECT sku, name, category, price, member_only,
       CAST(ceil(getvariable('price_bands') * cume_dist() OVER (
           PARTITION BY category ORDER BY price)) AS INTEGER) AS price_band
FROM raw.products
ORDER BY sku;
