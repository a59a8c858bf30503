#!/usr/bin/env node
import { readFileSync } from 'node:fs'
import { Command, CommanderError, Help, InvalidArgumentError } from 'commander'
import { ClaimError, mintToken, signingKey } from './claims.js'
import { ConfigError, loadConfig, redact } from './config.js'
import { serveWorkers } from './cluster.js'
import { banner, bannerText, checkServe, VERSION } from './startup.js'
import { startRecording } from './recorder/record.js'
import { RecordingError } from './recorder/file.js'
import { startReplay } from './recorder/replay.js'
import { serve } from './server.js'

/** Exit code of a usage error (unknown command or option, bad option value) and of a bad config or recording. */
const USAGE = 2

const program = new Command()
program
  .name('tailcast')
  .description('Live events over Server-Sent Events and WebSockets, with exact resume')
  .version(VERSION, '-V, --version', 'print the version and exit')
  // Commander errors (it prints them) become CommanderErrors, so the exit code is decided below.
  .exitOverride()
  // serve's catch-all argument (below) is not one to show.
  .configureHelp({ subcommandTerm: (cmd) => (cmd.name() === 'serve' ? 'serve [options]' : new Help().subcommandTerm(cmd)) })

const serveCommand = program
  .command('serve', { isDefault: true })
  .description('run the server (embedded store unless configured otherwise); the default command')
  // Anything left over is a mistyped command (`tailcast srve`) or a stray word: said so below.
  .argument('[words...]')
  .usage('[options]')
  .option('-c, --config <file>', 'config file (JSON); default /etc/tailcast/config.json when present')
  .option('-p, --port <port>', 'port to listen on (over env PORT and the config file)', portNumber)
  .option('--host <host>', 'address to listen on, e.g. 127.0.0.1 (over env HOST and the config file)')
  .option('--upstream <url>', 'relay mode: take events from this upstream tailcast stream (ws://, wss://, http://, https://) instead of POST; env TAILCAST_UPSTREAM')
  .option('--print-config', 'print the effective configuration (secrets redacted) and the startup banner, check it as serve would, and exit')
  .addHelpText('after', '\nPrecedence: these options > environment variables > config file > config/default.json.')
  .action(async (words: string[], opts: { config?: string; port?: number; host?: string; printConfig?: boolean; upstream?: string }) => {
    if (words.length > 0) {
      // program.args holds what came before the dispatch: `serve` itself when it was named.
      if (program.args[0] === 'serve') program.error(`error: serve takes no arguments, got '${words[0]}'`, { exitCode: USAGE, code: 'tailcast.excessArguments' })
      if (commandNames().includes(words[0])) program.error(`error: the command comes first: tailcast ${words[0]} [options]`, { exitCode: USAGE, code: 'tailcast.commandAfterOptions' })
      program.error(`error: unknown command '${words[0]}'. Commands: ${commandNames().join(', ')} (see tailcast --help)`, { exitCode: USAGE, code: 'tailcast.unknownCommand' })
    }
    const overrides = {
      ...(opts.port === undefined ? {} : { port: opts.port }),
      ...(opts.host === undefined ? {} : { host: opts.host }),
      ...(opts.upstream === undefined ? {} : { upstream: { url: opts.upstream } }),
    }
    const config = loadConfig({ file: opts.config, overrides })
    if (opts.printConfig) {
      // stdout: the configuration as JSON (for tools); stderr: the banner, as serve logs it.
      process.stdout.write(JSON.stringify(redact(config), null, 2) + '\n')
      process.stderr.write(bannerText(banner(config)))
    }
    checkServe(config)
    if (opts.printConfig) return
    if (config.workers > 1) await serveWorkers(config)
    else await serve(config)
  })

function commandNames(): string[] {
  return [...program.commands.map((c) => c.name()), 'help']
}

function positiveNumber(raw: string): number {
  const n = Number(raw)
  if (raw.trim() === '' || !Number.isFinite(n) || n <= 0) throw new InvalidArgumentError('expected a positive number')
  return n
}

function portNumber(raw: string): number {
  const n = Number(raw)
  if (!/^\d+$/.test(raw) || n > 65535) throw new InvalidArgumentError('expected a port number 0-65535')
  return n
}

/** Stop on the first Ctrl-C / SIGTERM; a second one exits at once. */
function onStopSignal(stop: () => Promise<void>): void {
  let stopping = false
  const handler = (): void => {
    if (stopping) process.exit(130)
    stopping = true
    stop().then(
      () => process.exit(0),
      (err: unknown) => {
        process.stderr.write(`tailcast: ${err instanceof Error ? err.message : String(err)}\n`)
        process.exit(1)
      },
    )
  }
  process.on('SIGINT', handler)
  process.on('SIGTERM', handler)
}

program
  .command('record')
  .description('record a stream (WebSocket or SSE) to a JSON Lines file, resuming across disconnects and restarts')
  .requiredOption('-u, --url <url>', 'stream URL: ws://, wss:// (WebSocket) or http://, https:// (SSE), e.g. ws://localhost:8080/v1/competitions/ID')
  .requiredOption('-f, --file <file>', 'recording file (JSON Lines); an existing one is continued after its last id')
  .option('--progress-interval <seconds>', 'seconds between progress lines when stderr is not a terminal', positiveNumber, 10)
  .option('--token <jwt>', 'a JWT for a private stream, sent as Authorization: Bearer; env TAILCAST_TOKEN (keeps it out of the process list)')
  .addHelpText('after', '\nEach line: {"receivedAt":"<ISO time>","event":{<the event as on the wire>}}. Ctrl-C flushes and stops.')
  .action(async (opts: { url: string; file: string; progressInterval: number; token?: string }) => {
    const token = opts.token ?? process.env.TAILCAST_TOKEN
    const recorder = await startRecording({ url: opts.url, file: opts.file, token, progressIntervalMs: opts.progressInterval * 1000 })
    onStopSignal(async () => void (await recorder.stop()))
    await recorder.failed.catch(async (err: unknown) => {
      await recorder.stop()
      throw err
    })
  })

program
  .command('replay')
  .description('serve a recording on the live server paths, over WebSocket and SSE, on the recorded schedule')
  .requiredOption('-f, --file <file>', 'recording made by `tailcast record`')
  .option('-s, --speed <n>', 'divide the recorded gaps by n (4: four times as fast)', positiveNumber, 1)
  .option('-p, --port <port>', 'port to listen on', portNumber, 3000)
  .option('--host <host>', 'address to listen on (0.0.0.0: every interface)', '127.0.0.1')
  .option('--loop', 'start over at the end (ids of each pass continue above the previous pass)', false)
  .option('--start-on-connect', 'start the schedule when the first client opens a stream, not at once', false)
  .option('-c, --config <file>', 'config file for the other server settings (CORS, heartbeat, ...)')
  .option('--progress-interval <seconds>', 'seconds between progress lines when stderr is not a terminal', positiveNumber, 10)
  .action(async (opts: { file: string; speed: number; port: number; host: string; loop: boolean; startOnConnect: boolean; config?: string; progressInterval: number }) => {
    const replay = await startReplay({ ...opts, progressIntervalMs: opts.progressInterval * 1000 })
    onStopSignal(() => replay.close())
  })

const collect = (value: string, list: string[]): string[] => [...list, value]

program
  .command('token')
  .description('print a JWT for private streams, signed with the server\'s HS256 secret (auth.jwt.secret, env TAILCAST_JWT_SECRET) or --key')
  .option('-s, --subscribe <path>', 'a stream it may follow, e.g. /messages?room=vip or /v1/competitions/* (repeat for more)', collect, [])
  .option('-P, --publish <target>', 'where it may post: room:NAME or competition:ID, * allowed (repeat for more)', collect, [])
  .option('-e, --expires <span>', 'lifetime: 30m, 1h, 7d, ...', '1h')
  .option('--subject <sub>', 'the sub claim (who the token is for)')
  .option('--key <file>', 'PEM private key for RS256 (RSA) or ES256 (EC P-256), when the server checks a public key or a JWKS')
  .option('-c, --config <file>', 'config file holding auth.jwt (secret, issuer, audience)')
  .addHelpText('after', "\nExample: TOKEN=$(tailcast token -s '/messages?room=vip' -P room:vip -e 2h)")
  .action(async (opts: { subscribe: string[]; publish: string[]; expires: string; subject?: string; key?: string; config?: string }) => {
    const { jwt } = loadConfig({ file: opts.config }).auth
    if (opts.key === undefined && jwt.secret === '') throw new ClaimError('no signing key: set TAILCAST_JWT_SECRET (as the server has it) or give --key private.pem')
    if (opts.subscribe.length === 0 && opts.publish.length === 0) throw new ClaimError('give at least one --subscribe or --publish: a token without either allows nothing')
    let pem: string | undefined
    if (opts.key !== undefined) {
      try {
        pem = readFileSync(opts.key, 'utf8')
      } catch (err) {
        throw new ClaimError(`cannot read --key ${opts.key}: ${(err as NodeJS.ErrnoException).code ?? 'unreadable'}`)
      }
    }
    let signer
    try {
      signer = signingKey(pem === undefined ? { secret: jwt.secret } : { privateKeyPem: pem })
    } catch (err) {
      throw new ClaimError(err instanceof ClaimError ? err.message : `--key ${opts.key}: not a PEM private key`)
    }
    const token = await mintToken(signer, { subscribe: opts.subscribe, publish: opts.publish, expiresIn: opts.expires, subject: opts.subject, issuer: jwt.issuer, audience: jwt.audience })
    process.stdout.write(token + '\n')
  })

// `tailcast --help` shows what `tailcast` alone does: serve, with these options.
program.addHelpText('after', () => {
  const help = serveCommand.createHelp()
  const options = help.visibleOptions(serveCommand).filter((o) => o.long !== '--help')
  const width = Math.max(...options.map((o) => o.flags.length))
  return `\nOptions of serve, the default command (tailcast serve --help):\n${options.map((o) => `  ${o.flags.padEnd(width)}  ${o.description}`).join('\n')}\n`
})

program.parseAsync().catch((err: unknown) => {
  if (err instanceof CommanderError) process.exit(err.exitCode === 0 ? 0 : USAGE)
  if (err instanceof ConfigError || err instanceof RecordingError || err instanceof ClaimError) {
    process.stderr.write(`tailcast: ${err.message}\n`)
    process.exit(USAGE)
  }
  process.stderr.write(`tailcast: ${err instanceof Error ? err.message : String(err)}\n`)
  process.exit(1)
})
