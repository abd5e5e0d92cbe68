-- Drops the column and whatever was written to it since the migration.
ALTER TABLE tb_post DROP COLUMN updated_at;
