"""SQL of the projector's bookkeeping: partition ownership and positions (fencing, see
runner.py), dead letters, and the advisory locks a batch takes before it writes."""

CLAIM_PARTITION = """
INSERT INTO projector_offsets (topic, partition, next_offset, epoch)
VALUES ($1, $2, 0, 1)
ON CONFLICT (topic, partition) DO UPDATE SET epoch = projector_offsets.epoch + 1,
                                             updated_at = now()
RETURNING next_offset, epoch
"""

# A batch also must not start before the stored position: records fetched before a
# (re)assignment, which then sought back to that position, would otherwise be applied twice
# (once now, once when they are fetched again).
ADVANCE = """
UPDATE projector_offsets AS o
   SET next_offset = n.next_offset, updated_at = now()
  FROM unnest($2::int[], $3::bigint[], $4::bigint[], $5::bigint[])
       AS n(partition, next_offset, epoch, first_offset)
 WHERE o.topic = $1 AND o.partition = n.partition AND o.epoch = n.epoch
   AND o.next_offset <= n.first_offset
"""

RECORD_DEAD_LETTER = """
INSERT INTO dead_letters (topic, partition, "offset", reason, detail, payload)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (topic, partition, "offset") DO NOTHING
"""


LOCK_SLOTS_SQL = (
    # unnest keeps the array's (sorted) order, so slots are taken in ascending order.
    "SELECT count(pg_advisory_xact_lock(7401, s)) FROM unnest($1::int[]) AS s"
)
