-- confiture:irreversible the original case of each e-mail address is not kept
-- There is no way back but the dump taken before the migration. This file refuses, so that
-- `confiture migrate down` run by hand fails here instead of deleting the migration's ledger
-- row while the change stays (confiture 1.29 runs a .down.sql that holds only the directive
-- above as if it had undone the change).
DO $$
BEGIN
    RAISE EXCEPTION 'migration 20260301000001 (normalize_user_emails) cannot be rolled back: '
                    'restore the dump taken before it';
END
$$;
