BEGIN;
SELECT * FROM x_tokens('u1');
COMMIT;
BEGIN;
SELECT pg_advisory_xact_lock(hashtextextended('u1', 7));
SELECT * FROM x_failures('u1', '203.0.113.7');
SELECT * FROM x_claim(2, 5, 1796204186, '\x00', 'u1', '203.0.113.7');
COMMIT;
