-- A fence on the lease: every ledger write of a run calls cdp.hold_lease first, in the same
-- statement or transaction. It share-locks the configuration row, which also holds off a claim by
-- another worker until the write commits (a claim skips locked rows), and raises once this worker
-- no longer owns the lease, so a worker that was paused past its lease (a GC pause, a network
-- stall, SIGSTOP) and woke up cannot write over the ledger of the worker that took the system
-- over. The owner is what counts, not the expiry: a lease that ran out but was never taken over
-- still leaves this worker the only writer. SQLSTATE CDPL1 tells the worker what happened.
CREATE OR REPLACE FUNCTION cdp.hold_lease(configuration integer, worker text)
RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM 1 FROM cdp.facebook_configurations
      WHERE id = configuration AND lease_owner = worker
      FOR SHARE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'the lease on configuration % is no longer held by this worker', configuration
            USING ERRCODE = 'CDPL1';
    END IF;
    RETURN true;
END
$$;
