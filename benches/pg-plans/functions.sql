CREATE OR REPLACE FUNCTION x_tokens(u text) RETURNS TABLE(id bigint, "user" text, device text, kind text, algorithm text, digits bigint, period bigint, created bigint, confirmed bigint, last_step bigint, disabled bigint, expires bigint, replaces text, secret bytea)
LANGUAGE plpgsql STABLE AS $f$
#variable_conflict use_column
BEGIN
RETURN QUERY SELECT t.id, t."user", t.device, t.kind, t.algorithm, t.digits, t.period, t.created, t.confirmed, t.last_step, t.disabled, t.expires, t.replaces, t.secret FROM tokens t WHERE t."user" = u ORDER BY t.device;
END $f$;
CREATE OR REPLACE FUNCTION x_failures(u text, h text) RETURNS TABLE(count bigint, last bigint)
LANGUAGE plpgsql STABLE AS $f$
BEGIN
RETURN QUERY SELECT f.count, f.last FROM failures f WHERE f."user" = u AND f.rhost = h UNION ALL SELECT NULL::bigint, g.at FROM guesses g WHERE g."user" = u;
END $f$;
CREATE OR REPLACE FUNCTION x_claim(i bigint, step bigint, now_ bigint, key bytea, u text, h text) RETURNS SETOF bigint
LANGUAGE plpgsql AS $f$
BEGIN
RETURN QUERY WITH claimed AS (
         UPDATE tokens SET last_step = step
         WHERE tokens.id = i AND tokens.secret = key AND tokens.confirmed IS NOT NULL
           AND tokens.disabled IS NULL AND (tokens.expires IS NULL OR tokens.expires > now_)
           AND (tokens.last_step IS NULL OR tokens.last_step < step)
         RETURNING tokens.id),
     cleared AS (
         DELETE FROM failures WHERE failures."user" = u AND failures.rhost = h
           AND (EXISTS (SELECT 1 FROM claimed) OR failures.count <= 0)),
     touched AS (
         UPDATE failures SET last = now_ WHERE failures."user" = u AND failures.rhost = h
           AND NOT EXISTS (SELECT 1 FROM claimed) AND failures.count > 0)
     SELECT claimed.id FROM claimed;
END $f$;
