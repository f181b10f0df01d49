-- Announce each logout to every process, so they can check tokens against an in-memory set
-- instead of querying cmd_revoked_tokens on every request (shared/revocations.py).
-- NOTIFY is delivered at commit; the payload is '<nonce> <expires_unix>'. An INSERT that
-- conflicts (the token was already revoked) inserts no row and so sends nothing.
CREATE FUNCTION cmd_revoked_tokens_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify(
        'token_revoked',
        NEW.nonce || ' ' || floor(extract(epoch FROM NEW.expires_at))::bigint::text
    );
    RETURN NULL;
END
$$;

CREATE TRIGGER cmd_revoked_tokens_notify
AFTER INSERT ON cmd_revoked_tokens
FOR EACH ROW EXECUTE FUNCTION cmd_revoked_tokens_notify();
