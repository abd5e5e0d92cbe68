-- When a post was last edited; NULL for the posts written before this migration. Adding a
-- nullable column without a default changes only the catalog (no table rewrite), but still
-- takes ACCESS EXCLUSIVE on tb_post for that moment.
ALTER TABLE tb_post ADD COLUMN updated_at timestamptz;
