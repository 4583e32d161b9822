-- The manifest root a generation published: the name of its blob in object
-- storage (the path table as that generation left it). NULL for generations
-- committed before roots were recorded.
ALTER TABLE generations ADD COLUMN root TEXT;
