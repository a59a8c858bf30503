/** Latency histogram in 0.1 ms buckets up to 30 s (the last bucket holds everything above). */
export const BUCKET_MS = 0.1
const BUCKETS = 300_001

export class Histogram {
  counts = new Uint32Array(BUCKETS)
  total = 0
  max = 0

  record(ms: number): void {
    const v = ms < 0 ? 0 : ms
    const i = Math.min(BUCKETS - 1, Math.floor(v / BUCKET_MS))
    this.counts[i]++
    this.total++
    if (v > this.max) this.max = v
  }

  reset(): void {
    this.counts.fill(0)
    this.total = 0
    this.max = 0
  }

  /** Non-empty buckets as [index, count] pairs, for sending between processes. */
  sparse(): [number, number][] {
    const out: [number, number][] = []
    for (let i = 0; i < BUCKETS; i++) if (this.counts[i] !== 0) out.push([i, this.counts[i]])
    return out
  }

  add(sparse: [number, number][], total: number, max: number): void {
    for (const [i, n] of sparse) this.counts[i] += n
    this.total += total
    if (max > this.max) this.max = max
  }

  percentile(p: number): number {
    if (this.total === 0) return NaN
    const rank = Math.ceil((p / 100) * this.total)
    let seen = 0
    for (let i = 0; i < BUCKETS; i++) {
      seen += this.counts[i]
      if (seen >= rank) return (i + 1) * BUCKET_MS
    }
    return this.max
  }
}
