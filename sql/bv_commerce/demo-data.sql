-- Demo catalog for `make run` (not part of the extension): a few products,
-- SKUs, prices and stock.  Safe to load twice.
INSERT INTO commerce.categories (slug, name) VALUES ('apparel', 'Apparel'), ('books', 'Books')
ON CONFLICT (slug) DO NOTHING;

INSERT INTO commerce.products (slug, name, description, category_id)
SELECT v.slug, v.name, v.description, c.id
FROM (VALUES ('bv-tshirt', 'BitVelocity T-shirt', 'Organic cotton, elephant print.', 'apparel'),
             ('pg-internals', 'PostgreSQL Internals', 'A book about the server we live in.', 'books'))
     AS v(slug, name, description, category)
JOIN commerce.categories c ON c.slug = v.category
ON CONFLICT (slug) DO NOTHING;

INSERT INTO commerce.skus (product_id, code, attributes)
SELECT p.id, v.code, v.attributes::jsonb
FROM (VALUES ('bv-tshirt', 'TSHIRT-M', '{"size":"M"}'), ('bv-tshirt', 'TSHIRT-L', '{"size":"L"}'),
             ('pg-internals', 'BOOK-PGI', '{}')) AS v(product, code, attributes)
JOIN commerce.products p ON p.slug = v.product
ON CONFLICT (code) DO NOTHING;

INSERT INTO commerce.prices (sku_id, currency, amount_minor)
SELECT s.id, v.currency, v.amount
FROM (VALUES ('TSHIRT-M', 'USD', 2500), ('TSHIRT-M', 'EUR', 2300), ('TSHIRT-L', 'USD', 2500),
             ('TSHIRT-L', 'EUR', 2300), ('BOOK-PGI', 'USD', 4900)) AS v(code, currency, amount)
JOIN commerce.skus s ON s.code = v.code
ON CONFLICT (sku_id, currency) DO NOTHING;

INSERT INTO commerce.inventory (sku_id, total)
SELECT s.id, v.total
FROM (VALUES ('TSHIRT-M', 100), ('TSHIRT-L', 100), ('BOOK-PGI', 10)) AS v(code, total)
JOIN commerce.skus s ON s.code = v.code
ON CONFLICT (sku_id) DO NOTHING;
