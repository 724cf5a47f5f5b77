-- The default extraction, as the worker builds it on a CDP that has every column it knows.
-- The worker does not read this file: it builds the query for each run from the columns the CDP
-- really has, with only those a system's match keys use (and `country` for phones). It is here to
-- copy when a CDP names its columns otherwise: point EXTRACT_SQL_FILE at your copy.
-- Inputs: $1 = the system's tenant ids (integer[]), $2 = its excluded RFM segments (text[]).
-- Output, read by column name: customer_id (bigint), tenant_id (integer), and, as text, any of
--   email, phone, first_name, last_name, city, state, zip, country, birth_date, gender,
--   external_id, madid, lookalike_value.
-- A match key whose column is missing makes a system that asks for it `invalid_config`.
-- Customers without an email are kept: a phone or external id alone still matches on Meta.
SELECT c.id::bigint AS customer_id,
       c.tenant_id::integer AS tenant_id,
       c.email::text AS email,
       c.phone::text AS phone,
       c.firstname::text AS first_name,
       c.lastname::text AS last_name,
       c.city::text AS city,
       c.state::text AS state,
       c.zip::text AS zip,
       c.country::text AS country,
       c.birth_date::text AS birth_date,
       c.gender::text AS gender,
       c.external_id::text AS external_id,
       c.madid::text AS madid,
       v.clv::text AS lookalike_value
FROM customers_master c
JOIN cdp_rfm_analysis r ON r.customer_id = c.id
LEFT JOIN cdp_clv_analysis v ON v.customer_id = c.id
WHERE c.tenant_id = ANY($1)
  AND r.rfm_segment <> ALL($2)
