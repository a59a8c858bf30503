import type { Collection, IndexDescription } from 'mongodb'

/**
 * Idempotency keys on MongoDB and FerretDB: the key (already scoped to its publisher, see
 * idempotency.ts) is a field of the event's document, `ik`, under a UNIQUE index, so the check and
 * the insert are one write on every instance: a second document with the key fails with a
 * duplicate key, whichever instance writes it. Its body's digest, `ih`, sits next to it.
 *
 * Sparse, because most events carry no key: MongoDB skips documents without the field; FerretDB
 * v1.24 (SQLite) refuses `partialFilterExpression` ("not implemented yet"), takes `sparse` and
 * indexes a missing field as NULL, which its unique constraint lets repeat. Both give "unique
 * among documents with a key", which is what is needed.
 *
 * Before this, keys were stored unscoped in `k` under a plain index (`idempotency_key`); a new
 * field spares a migration of old documents (capped collections refuse updates that grow a
 * document, and old duplicates would stop a unique index on `k`): the old index is dropped, old
 * documents keep their `k`, which nothing reads.
 */
export const KEY_INDEX: IndexDescription = { key: { ik: 1 }, name: 'idempotency_scoped_key', unique: true, sparse: true }
const OLD_KEY_INDEX = 'idempotency_key'

/** MongoDB's code for a missing index (dropIndex of one another instance dropped first). */
const INDEX_NOT_FOUND = 27

/** Drop the old unscoped key index and make sure the unique one exists; tolerant of another instance doing the same. */
export async function ensureKeyIndex(coll: Collection<any>, have: Set<string>): Promise<void> {
  if (have.has(OLD_KEY_INDEX)) {
    await coll.dropIndex(OLD_KEY_INDEX).catch((err: { code?: number }) => {
      if (err.code !== INDEX_NOT_FOUND) throw err
    })
  }
  if (have.has(KEY_INDEX.name as string)) return
  try {
    await coll.createIndexes([KEY_INDEX])
  } catch (err) {
    // Another instance starting at the same time created it: fine when it is there now.
    const now = new Set((await coll.listIndexes().toArray()).map((i) => i.name as string))
    if (!now.has(KEY_INDEX.name as string)) throw err
  }
}

/** Is this duplicate-key error about the key index (MongoDB names the index; FerretDB does not)? */
export function namesKeyIndex(message: string): boolean | undefined {
  const index = /index: (\S+)/.exec(message)?.[1]
  return index === undefined ? undefined : index === KEY_INDEX.name
}
