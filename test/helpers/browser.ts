import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { chromium, type BrowserContext } from 'playwright-core'

/** Debian's chromium; playwright-core drives it and never downloads a browser of its own. */
export const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium'

/** The flags this machine needs for a headless Chromium run as root in a container. */
export const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
]

/** Where tests put screenshots: gitignored, kept after the run so a person can look at them. */
export const SCREENSHOT_DIR = process.env.TAILCAST_SCREENSHOT_DIR ?? fileURLToPath(new URL('../../.tap/screenshots/', import.meta.url))

export interface Browser {
  context: BrowserContext
  /** Absolute path for a screenshot named `name` (.png added). */
  shot(name: string): string
  close(): Promise<void>
}

/**
 * Launch headless Chromium with a fresh user-data dir; throws how to install it when missing.
 * `trustSpki`: public-key hashes (TestCert.spki) of self-signed certificates to accept as valid.
 */
export async function launchBrowser(viewport = { width: 390, height: 800 }, opts: { trustSpki?: string[] } = {}): Promise<Browser> {
  if (!existsSync(CHROMIUM)) {
    throw new Error(`Chromium is not installed at ${CHROMIUM}: run "apt-get install -y chromium" (or set CHROMIUM_PATH)`)
  }
  const profile = mkdtempSync(join(tmpdir(), 'tailcast-chromium-'))
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: opts.trustSpki === undefined ? CHROMIUM_ARGS : [...CHROMIUM_ARGS, `--ignore-certificate-errors-spki-list=${opts.trustSpki.join(',')}`],
    viewport,
    timeout: 60_000,
  })
  mkdirSync(SCREENSHOT_DIR, { recursive: true })
  return {
    context,
    shot: (name) => join(SCREENSHOT_DIR, `${name}.png`),
    async close() {
      await context.close()
      rmSync(profile, { recursive: true, force: true })
    },
  }
}

/**
 * Chromium for one test file, closed when the file ends. One that cannot start fails the file with
 * the reason (how to install it), never a skip.
 */
export async function browserForFile(t: { fail(message: string): void; teardown(fn: () => unknown): void }, opts: { trustSpki?: string[] } = {}): Promise<Browser> {
  try {
    const browser = await launchBrowser(undefined, opts)
    t.teardown(() => browser.close())
    return browser
  } catch (err) {
    t.fail((err as Error).message)
    process.exit(1)
  }
}
