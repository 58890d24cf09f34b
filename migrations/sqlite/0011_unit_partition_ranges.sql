-- A unit may cover several whole partitions (partition_no to partition_last, both included) when
-- they are small: a store of a few unit sizes is then split into a few units instead of one per
-- partition. NULL: the unit covers partition_no only (units planned before).
ALTER TABLE tasks ADD COLUMN partition_last INTEGER;
