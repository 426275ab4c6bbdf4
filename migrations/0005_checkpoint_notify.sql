-- Tells query processes that a projection's checkpoint moved, so they can keep it in memory
-- instead of reading it per request. NOTIFY is delivered only at commit, so a listener never
-- sees a checkpoint before the read-model rows written with it. Payload: "<projection> <xid>:<position>".
-- Shadow schemas copy this table with LIKE ... INCLUDING ALL, which leaves triggers behind:
-- a rebuild notifies only when it swaps (its UPDATE of the live row).
CREATE FUNCTION notify_checkpoint() RETURNS trigger
    LANGUAGE plpgsql AS
$$
BEGIN
    PERFORM pg_notify('murmur_checkpoints',
                      NEW.projection || ' ' || NEW.transaction_id::text || ':' || NEW.position::text);
    RETURN NULL;
END
$$;

CREATE TRIGGER projection_checkpoints_notify
    AFTER INSERT OR UPDATE ON public.projection_checkpoints
    FOR EACH ROW
EXECUTE FUNCTION notify_checkpoint();
