import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import type { FastifyInstance } from 'fastify'
import { Type } from 'typebox'
import { refuse, schemaErrors, unavailable } from '../errors.js'
import { ACCESS_TOKEN_PARAM } from '../plugins/auth.js'
import { keyOfPath } from '../stream.js'

const PRESENCE_QUERY = Type.Object(
  {
    stream: Type.String({ minLength: 1, maxLength: 300, description: 'stream must be a stream path, e.g. /messages?room=vip or /v1/competitions/c-42' }),
    access_token: ACCESS_TOKEN_PARAM,
  },
  { additionalProperties: false },
)

/** GET /v1/presence?stream=PATH: how many clients follow that stream, over every instance sharing the store. */
export default async function presence(fastify: FastifyInstance): Promise<void> {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>()
  app.get(
    '/v1/presence',
    {
      schema: { querystring: PRESENCE_QUERY },
      schemaErrorFormatter: schemaErrors(PRESENCE_QUERY),
      // With private streams, only who may follow a stream may count its followers.
      onRequest: app.auth.authenticate,
      config: { requestLogLevel: 'debug' },
    },
    async (req, reply) => {
      const { stream } = req.query
      const key = keyOfPath(stream)
      if (key === null) {
        return refuse(reply, 400, `stream must be a stream path: /v1/competitions, /v1/competitions/ID, /messages or /messages?room=ROOM (got ${JSON.stringify(stream).slice(0, 120)})`)
      }
      if (app.auth.authorize(req, reply, stream) !== undefined) return reply
      try {
        const [counts, instances] = await Promise.all([app.presence.counts(), app.presence.instances()])
        return { stream, clients: counts.get(key) ?? 0, instances }
      } catch (err) {
        req.log.warn({ err }, 'presence: the other instances\' counts cannot be read')
        return unavailable(reply, 'the store is unavailable: the counts of the other instances cannot be read; retry later', 5)
      }
    },
  )
}
