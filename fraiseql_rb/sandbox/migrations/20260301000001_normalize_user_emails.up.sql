-- Store every e-mail address in lower case, and keep it so. A data transform: the original
-- case of each address is not kept, so this migration cannot be undone (see its .down.sql).
-- The constraint is added NOT VALID and validated after, so the ACCESS EXCLUSIVE lock of the
-- ADD is brief and the scan of the VALIDATE lets reads and writes go on.
-- confiture:irreversible data: the original case of each e-mail address is not kept
UPDATE tb_user SET email = lower(email) WHERE email <> lower(email);
ALTER TABLE tb_user ADD CONSTRAINT ck_tb_user_email_lower CHECK (email = lower(email)) NOT VALID;
ALTER TABLE tb_user VALIDATE CONSTRAINT ck_tb_user_email_lower;
