DROP TABLE outbox;
DROP TABLE stock;
DROP TABLE products;
