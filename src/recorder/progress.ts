/** Where progress goes: stderr by default; a TTY gets one line rewritten in place. */
export interface ProgressOutput {
  write(text: string): unknown
  isTTY?: boolean
}

/**
 * A progress display for long runs: on a TTY the status line is redrawn every 250 ms; otherwise
 * (a log file, a pipe) a plain line is printed every `intervalMs`. Notes (reconnects, warnings)
 * are always printed on their own line.
 */
export class Progress {
  private timer: NodeJS.Timeout | undefined
  private drawn = false

  constructor(
    private readonly out: ProgressOutput,
    private readonly status: () => string,
    private readonly intervalMs = 10_000,
  ) {}

  start(): void {
    const tty = this.out.isTTY === true
    this.timer = setInterval(() => this.draw(), tty ? 250 : this.intervalMs)
    this.timer.unref()
  }

  note(line: string): void {
    this.clear()
    this.out.write(line + '\n')
  }

  /** Print the final status as a plain line and stop. */
  stop(final?: string): void {
    clearInterval(this.timer)
    this.clear()
    this.out.write((final ?? this.status()) + '\n')
  }

  private draw(): void {
    if (this.out.isTTY === true) {
      this.out.write(`\r\x1b[K${this.status()}`)
      this.drawn = true
    } else {
      this.out.write(this.status() + '\n')
    }
  }

  private clear(): void {
    if (this.drawn) this.out.write('\r\x1b[K')
    this.drawn = false
  }
}
