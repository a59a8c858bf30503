#!/usr/bin/env node
import { Command } from 'commander'
import { ConfigError, loadConfig, redact } from './config.js'
import { serveWorkers } from './cluster.js'
import { serve } from './server.js'

const program = new Command()
program.name('tailcast').description('Live events over Server-Sent Events and WebSockets, with exact resume')

program
  .command('serve', { isDefault: true })
  .description('run the server (embedded store unless configured otherwise)')
  .option('-c, --config <file>', 'config file (JSON); default /etc/tailcast/config.json when present')
  .option('--print-config', 'print the effective configuration (secrets redacted) and exit')
  .action(async (opts: { config?: string; printConfig?: boolean }) => {
    const config = loadConfig({ file: opts.config })
    if (opts.printConfig) {
      process.stdout.write(JSON.stringify(redact(config), null, 2) + '\n')
      return
    }
    if (config.workers > 1) await serveWorkers(config)
    else await serve(config)
  })

program.parseAsync().catch((err: unknown) => {
  if (err instanceof ConfigError) {
    process.stderr.write(`tailcast: ${err.message}\n`)
    process.exit(2)
  }
  process.stderr.write(`tailcast: ${err instanceof Error ? err.message : String(err)}\n`)
  process.exit(1)
})
