BEGIN;
SELECT CASE WHEN max(value) BETWEEN 9 AND 10 THEN 0 ELSE CAST('pam_totp schema ' || COALESCE(max(value)::text, 'none') AS BIGINT) END FROM pam_totp_meta WHERE key = 'schema_version';
SELECT id, "user", device, kind, algorithm, digits, period, created, confirmed, last_step, disabled, expires, replaces, secret FROM tokens WHERE "user" = 'u1' ORDER BY device;
COMMIT;
BEGIN;
SELECT pg_advisory_xact_lock(hashtextextended('u1', 7));
SELECT count, last FROM failures WHERE "user" = 'u1' AND rhost = '203.0.113.7' UNION ALL SELECT NULL, at FROM guesses WHERE "user" = 'u1';
WITH claimed AS (
         UPDATE tokens SET last_step = 5
         WHERE id = 2 AND secret = '\x00' AND confirmed IS NOT NULL
           AND disabled IS NULL AND (expires IS NULL OR expires > 1796204186)
           AND (last_step IS NULL OR last_step < 5)
         RETURNING id),
     cleared AS (
         DELETE FROM failures WHERE "user" = 'u1' AND rhost = '203.0.113.7'
           AND (EXISTS (SELECT 1 FROM claimed) OR count <= 0)),
     touched AS (
         UPDATE failures SET last = 1796204186 WHERE "user" = 'u1' AND rhost = '203.0.113.7'
           AND NOT EXISTS (SELECT 1 FROM claimed) AND count > 0)
     SELECT id FROM claimed;
COMMIT;
