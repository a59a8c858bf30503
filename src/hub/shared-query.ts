/**
 * One query shared by everyone who asks for a fresh answer: `fresh()` resolves with the result of a
 * query that started after the call. While one runs, every caller that arrives joins the next one,
 * which starts when the running one ends: a storm of a thousand askers costs one or two queries.
 */
export class SharedQuery<T> {
  private running: Promise<T> | undefined
  private next: Promise<T> | undefined

  constructor(private readonly query: () => Promise<T>) {}

  fresh(): Promise<T> {
    if (this.running === undefined) return this.start()
    if (this.next === undefined) {
      const after = this.running.then(
        () => undefined,
        () => undefined,
      )
      this.next = after.then(() => {
        this.next = undefined
        return this.start()
      })
    }
    return this.next
  }

  private start(): Promise<T> {
    const p = this.query().finally(() => {
      if (this.running === p) this.running = undefined
    })
    this.running = p
    return p
  }
}
