/**
 * Where the server's time goes: self time per function of a V8 `.cpuprofile` (what
 * `npm run bench -- --cpu-prof` writes to bench/profiles/), largest first.
 *
 *   node dist-bench/profile.js bench/profiles/<file>.cpuprofile [top]
 */
import { readFileSync } from 'node:fs'
import { basename } from 'node:path'
import { fileURLToPath } from 'node:url'

interface ProfileNode {
  id: number
  callFrame: { functionName: string; url: string; lineNumber: number }
  hitCount?: number
}
interface CpuProfile {
  nodes: ProfileNode[]
  samples: number[]
  timeDeltas: number[]
}

export interface SelfTime {
  what: string
  ms: number
  share: number
}

/** Self time summed by function (name and place), from the samples and their time deltas. */
export function selfTimes(profile: CpuProfile): SelfTime[] {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]))
  const ms = new Map<string, number>()
  let total = 0
  profile.samples.forEach((id, i) => {
    const node = byId.get(id)
    if (node === undefined) return
    const dt = (profile.timeDeltas[i] ?? 0) / 1000
    const { functionName, url, lineNumber } = node.callFrame
    const place = url === '' ? '' : ` ${url.includes('node_modules') ? url.slice(url.lastIndexOf('node_modules/') + 13) : basename(url)}:${lineNumber + 1}`
    const what = `${functionName === '' ? '(anonymous)' : functionName}${place}`
    ms.set(what, (ms.get(what) ?? 0) + dt)
    total += dt
  })
  return [...ms.entries()].map(([what, t]) => ({ what, ms: t, share: total > 0 ? t / total : 0 })).sort((a, b) => b.ms - a.ms)
}

export function formatSelfTimes(file: string, top: number): string {
  const rows = selfTimes(JSON.parse(readFileSync(file, 'utf8')) as CpuProfile).slice(0, top)
  return [`self time, ${basename(file)}:`, ...rows.map((r) => `  ${(100 * r.share).toFixed(1).padStart(5)} %  ${r.ms.toFixed(0).padStart(7)} ms  ${r.what}`)].join('\n')
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const [file, top] = process.argv.slice(2)
  if (file === undefined) {
    console.error('usage: node dist-bench/profile.js <file.cpuprofile> [top]')
    process.exit(2)
  }
  console.log(formatSelfTimes(file, Number(top ?? 25)))
}
