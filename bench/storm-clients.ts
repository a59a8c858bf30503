/**
 * A storm's clients in a process of their own, forked by resumeApart (bench/storm.ts): the parent
 * times POSTs and a follower's deliveries meanwhile, and its event loop must not be the one busy
 * scanning the storm's replays. IPC: 'ready' out, a ResumePlan in, its ResumeOutcome out.
 */
import { resumeAll, type ResumePlan } from './storm.js'

process.once('message', (plan: ResumePlan) => {
  void resumeAll(plan).then((outcome) => process.send?.(outcome, () => process.exit(0)))
})
process.on('disconnect', () => process.exit(0))
process.send?.('ready')
