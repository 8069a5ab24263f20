// Interoperability checks of Petrel with MQTT.js 5.x (protocolVersion 4,
// MQTT 3.1.1, and protocolVersion 5).
//
// Usage: node mqttjs_check.mjs PORT [RUN_ID [WS_PORT]]
//
// With WS_PORT, also checks MQTT over WebSocket at ws://127.0.0.1:WS_PORT/mqtt.
//
// Connects to 127.0.0.1:PORT only. Prints one `PASS mqttjs <check>` or
// `FAIL mqttjs <check>: <why>` line per check and exits 1 if any check
// failed. Every wait is bounded.

import mqtt from 'mqtt'

const HOST = '127.0.0.1'
const TIMEOUT = 10000 // ms for any single wait
const SETTLE = 500 // ms to wait for messages that must NOT arrive

const port = Number(process.argv[2])
const run = process.argv[3] ?? `${process.pid}-${Date.now()}`
const wsPort = process.argv[4] ? Number(process.argv[4]) : undefined
if (!Number.isInteger(port) || port <= 0) {
  console.error('usage: node mqttjs_check.mjs PORT [RUN_ID]')
  process.exit(2)
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

function withTimeout (promise, ms, what) {
  let timer
  const timeout = new Promise((resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: nothing within ${ms} ms`)), ms)
  })
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer))
}

function describe (msgs) {
  return msgs.map((m) => `(${m.topic} ${JSON.stringify(m.payload)} qos=${m.qos} retain=${m.retain})`)
    .join(', ') || 'none'
}

class Peer {
  // `v5` connects at MQTT 5; `sessionExpiry` is its Session Expiry Interval.
  constructor (name, { clean = true, will, v5 = false, sessionExpiry, url } = {}) {
    this.url = url ?? `mqtt://${HOST}:${port}`
    this.clientId = `mqttjs-${name}-${run}`
    this.options = {
      protocolVersion: v5 ? 5 : 4,
      clientId: this.clientId,
      clean,
      keepalive: 30,
      reconnectPeriod: 0, // never reconnect behind the check's back
      connectTimeout: TIMEOUT,
      will
    }
    if (sessionExpiry !== undefined) {
      this.options.properties = { sessionExpiryInterval: sessionExpiry }
    }
    this.messages = []
    this.waiters = []
    this.client = null
  }

  // Connects; resolves to the CONNACK's session-present flag.
  async connect () {
    this.client = mqtt.connect(this.url, this.options)
    // Attached before the CONNACK can arrive: queued messages of a stored
    // session may follow it immediately.
    this.client.on('message', (topic, payload, packet) => {
      this.messages.push({
        topic,
        payload: payload.toString(),
        qos: packet.qos,
        retain: packet.retain,
        properties: packet.properties
      })
      for (const w of this.waiters.splice(0)) w()
    })
    this.client.on('error', () => {}) // surfaced through the awaited calls
    const connack = await withTimeout(new Promise((resolve, reject) => {
      this.client.once('connect', resolve)
      this.client.once('error', reject)
      this.client.once('close', () => reject(new Error('connection closed before CONNACK')))
    }), TIMEOUT, 'CONNACK')
    return connack.sessionPresent
  }

  async subscribe (topic, qos) {
    const granted = await withTimeout(this.client.subscribeAsync(topic, { qos }), TIMEOUT, 'SUBACK')
    const qoses = granted.map((g) => g.qos)
    if (qoses.length !== 1 || qoses[0] !== qos) {
      throw new Error(`SUBACK granted ${JSON.stringify(qoses)}, asked for QoS ${qos}`)
    }
  }

  // Resolves once the QoS flow has completed (PUBACK / PUBCOMP).
  async publish (topic, payload, qos, retain = false, properties = undefined) {
    await withTimeout(this.client.publishAsync(topic, payload, { qos, retain, properties }), TIMEOUT,
      `publish ${topic} QoS ${qos}`)
  }

  // Resolves to the next `count` messages (consumed), or fails.
  async expect (count, ms = TIMEOUT) {
    const deadline = Date.now() + ms
    while (this.messages.length < count) {
      const left = deadline - Date.now()
      if (left <= 0) {
        throw new Error(`received ${this.messages.length} of ${count} messages within ${ms} ms: ` +
          describe(this.messages))
      }
      await new Promise((resolve) => {
        const timer = setTimeout(resolve, left)
        this.waiters.push(() => { clearTimeout(timer); resolve() })
      })
    }
    return this.messages.splice(0, count)
  }

  async expectNothing (ms = SETTLE) {
    await sleep(ms)
    if (this.messages.length > 0) {
      throw new Error(`unexpected messages: ${describe(this.messages.splice(0))}`)
    }
  }

  async close () {
    if (this.client && !this.client.disconnected && this.client.connected) {
      await withTimeout(this.client.endAsync(), TIMEOUT, 'DISCONNECT').catch(() => {})
    }
    if (this.client) this.client.end(true)
  }
}

function assertMessage (msg, topic, payload, qos, retain) {
  const want = JSON.stringify([topic, payload, qos, retain])
  const got = JSON.stringify([msg.topic, msg.payload, msg.qos, msg.retain])
  if (want !== got) throw new Error(`want [topic, payload, qos, retain] ${want}, got ${got}`)
}

const topicOf = (name) => `interop/${run}/mqttjs/${name}`

let passed = 0
let failed = 0
let peers = []

function peer (name, options) {
  const p = new Peer(name, options)
  peers.push(p)
  return p
}

async function check (name, fn) {
  try {
    await fn()
    passed++
    console.log(`PASS mqttjs ${name}`)
  } catch (e) {
    failed++
    console.log(`FAIL mqttjs ${name}: ${e && e.message ? e.message : e}`)
  } finally {
    await Promise.all(peers.map((p) => p.close().catch(() => {})))
    peers = []
  }
}

async function pubsub (qos) {
  const topic = topicOf(`qos${qos}`)
  const payload = `mqttjs-qos${qos}-${run}`
  const sub = peer(`sub-qos${qos}`)
  await sub.connect()
  await sub.subscribe(topic, qos)
  const pub = peer(`pub-qos${qos}`)
  await pub.connect()
  await pub.publish(topic, payload, qos)
  const [msg] = await sub.expect(1)
  assertMessage(msg, topic, payload, qos, false)
  await sub.expectNothing() // exactly once: no duplicate
}

async function retained () {
  const topic = topicOf('retained')
  const payload = `mqttjs-retained-${run}`
  const pub = peer('pub-retained')
  await pub.connect()
  await pub.publish(topic, 'mqttjs-retained-old', 1, true)
  await pub.publish(topic, payload, 1, true)
  const sub = peer('sub-retained')
  await sub.connect()
  await sub.subscribe(topic, 1)
  const [msg] = await sub.expect(1)
  assertMessage(msg, topic, payload, 1, true)
  await sub.expectNothing() // only the newest retained message
}

async function retainedClear () {
  const topic = topicOf('retained-clear')
  const pub = peer('pub-retained-clear')
  await pub.connect()
  await pub.publish(topic, 'mqttjs-clear-me', 1, true)
  await pub.publish(topic, '', 1, true)
  const sub = peer('sub-retained-clear')
  await sub.connect()
  await sub.subscribe(topic, 1)
  await sub.expectNothing(1000)
}

async function will () {
  const topic = topicOf('will')
  const payload = `mqttjs-will-${run}`
  const watcher = peer('will-watcher')
  await watcher.connect()
  await watcher.subscribe(topic, 1)
  const owner = peer('will-client', { will: { topic, payload, qos: 1, retain: false } })
  await owner.connect()
  await watcher.expectNothing(200) // no will while it lives
  // Drop the TCP connection without a DISCONNECT.
  owner.client.stream.destroy()
  const [msg] = await watcher.expect(1)
  assertMessage(msg, topic, payload, 1, false)
}

async function persistentSession () {
  const topic = topicOf('persist')
  const payloads = [1, 2, 3].map((i) => `mqttjs-persist-${i}-${run}`)
  const first = peer('persist', { clean: false })
  await first.connect()
  await first.subscribe(topic, 1)
  await first.close()
  const pub = peer('pub-persist')
  await pub.connect()
  for (const p of payloads) await pub.publish(topic, p, 1)
  // Same client id, clean false, no new SUBSCRIBE: the subscription and the
  // queued messages come from the stored session.
  const again = peer('persist', { clean: false })
  const present = await again.connect()
  if (!present) throw new Error('CONNACK session present = 0 on reconnect')
  const got = await again.expect(3)
  got.forEach((msg, i) => assertMessage(msg, topic, payloads[i], 1, false))
  await again.expectNothing()
  await again.close()
  // Discard the session.
  await peer('persist', { clean: true }).connect()
}

async function v5UserProperties () {
  const topic = topicOf('v5-props')
  const sub = peer('v5-sub-props', { v5: true })
  await sub.connect()
  await sub.subscribe(topic, 1)
  const pub = peer('v5-pub-props', { v5: true })
  await pub.connect()
  await pub.publish(topic, 'with properties', 1, false, {
    userProperties: { zone: 'north', kind: ['a', 'b'] },
    contentType: 'text/plain',
    responseTopic: topicOf('v5-replies'),
    correlationData: Buffer.from('corr-1')
  })
  const [msg] = await sub.expect(1)
  const got = msg.properties || {}
  const want = JSON.stringify({ zone: 'north', kind: ['a', 'b'] })
  if (JSON.stringify(got.userProperties) !== want) {
    throw new Error(`user properties ${JSON.stringify(got.userProperties)}, want ${want}`)
  }
  if (got.contentType !== 'text/plain' || got.responseTopic !== topicOf('v5-replies') ||
      String(got.correlationData) !== 'corr-1') {
    throw new Error(`properties changed on the way: ${JSON.stringify(got)}`)
  }
}

async function v5MessageExpiry () {
  const topic = topicOf('v5-expiry')
  const sleeper = peer('v5-expiry-sub', { v5: true, sessionExpiry: 300 })
  await sleeper.connect()
  await sleeper.subscribe(topic, 1)
  await sleeper.close()
  const pub = peer('v5-expiry-pub', { v5: true })
  await pub.connect()
  await pub.publish(topic, 'short-lived', 1, false, { messageExpiryInterval: 1 })
  await pub.publish(topic, 'long-lived', 1, false, { messageExpiryInterval: 60 })
  await sleep(2100) // the behaviour under test: the first one expires
  const again = peer('v5-expiry-sub', { v5: true, clean: false, sessionExpiry: 0 })
  if (!(await again.connect())) throw new Error('CONNACK session present = 0 on reconnect')
  const [msg] = await again.expect(1)
  assertMessage(msg, topic, 'long-lived', 1, false)
  const left = msg.properties && msg.properties.messageExpiryInterval
  if (!(left >= 50 && left < 60)) throw new Error(`Message Expiry Interval ${left}, want what is left of 60`)
  await again.expectNothing()
}

async function v5SharedSubscription () {
  const topic = topicOf('v5-shared')
  const members = [1, 2].map((i) => peer(`v5-member-${i}`, { v5: true }))
  for (const member of members) {
    await member.connect()
    await member.subscribe(`$share/mqttjs/${topic}`, 1)
  }
  const pub = peer('v5-shared-pub', { v5: true })
  await pub.connect()
  for (let n = 0; n < 10; n++) await pub.publish(topic, `job-${n}`, 1)
  const deadline = Date.now() + TIMEOUT
  while (members.reduce((sum, m) => sum + m.messages.length, 0) < 10 && Date.now() < deadline) {
    await sleep(20)
  }
  const counts = members.map((m) => m.messages.length)
  const payloads = members.flatMap((m) => m.messages.splice(0).map((msg) => msg.payload)).sort()
  const want = [...Array(10).keys()].map((n) => `job-${n}`).sort()
  if (JSON.stringify(payloads) !== JSON.stringify(want)) {
    throw new Error(`members got ${JSON.stringify(payloads)} (counts ${counts})`)
  }
  if (counts.includes(0)) throw new Error(`not spread over both members: ${counts}`)
}

async function v5WillDelay () {
  const topic = topicOf('v5-will-delay')
  const payload = `mqttjs-v5-will-${run}`
  const watcher = peer('v5-will-watcher', { v5: true })
  await watcher.connect()
  await watcher.subscribe(topic, 1)
  const owner = peer('v5-will-client', {
    v5: true,
    sessionExpiry: 60,
    will: { topic, payload, qos: 1, retain: false, properties: { willDelayInterval: 2 } }
  })
  await owner.connect()
  owner.client.stream.destroy()
  const dropped = Date.now()
  await watcher.expectNothing(1000) // held back for the 2 s delay
  const [msg] = await watcher.expect(1)
  assertMessage(msg, topic, payload, 1, false)
  if (Date.now() - dropped < 1500) throw new Error('will came before its 2 s delay')
}

async function v5SessionExpiry () {
  const topic = topicOf('v5-session')
  const first = peer('v5-session', { v5: true, sessionExpiry: 60 })
  if (await first.connect()) throw new Error('session present on a clean start')
  await first.subscribe(topic, 1)
  await first.close()
  const pub = peer('v5-session-pub', { v5: true })
  await pub.connect()
  await pub.publish(topic, 'kept for you', 1)
  const again = peer('v5-session', { v5: true, clean: false, sessionExpiry: 1 })
  if (!(await again.connect())) throw new Error('CONNACK session present = 0 within the expiry')
  const [msg] = await again.expect(1)
  assertMessage(msg, topic, 'kept for you', 1, false)
  await again.close()
  await sleep(2500) // the behaviour under test: the 1 s expiry passes
  const late = peer('v5-session', { v5: true, clean: false, sessionExpiry: 0 })
  if (await late.connect()) throw new Error('session still present after its expiry')
}

async function websocketPubsub () {
  const url = `ws://${HOST}:${wsPort}/mqtt`
  const topic = topicOf('ws')
  const sub = peer('ws-sub', { url, v5: true })
  await sub.connect()
  await sub.subscribe(topic, 1)
  const pub = peer('ws-pub', { url })
  await pub.connect()
  await pub.publish(topic, 'over websocket', 1)
  const [msg] = await sub.expect(1)
  assertMessage(msg, topic, 'over websocket', 1, false)
}

for (const qos of [0, 1, 2]) await check(`qos${qos} pubsub`, () => pubsub(qos))
await check('retained', retained)
await check('retained clear', retainedClear)
await check('will', will)
await check('persistent session', persistentSession)
await check('v5 user properties', v5UserProperties)
await check('v5 message expiry', v5MessageExpiry)
await check('v5 shared subscription', v5SharedSubscription)
await check('v5 will delay', v5WillDelay)
await check('v5 session expiry', v5SessionExpiry)
if (wsPort) await check('ws pubsub (3.1.1 and 5.0 over ws://)', websocketPubsub)

process.exit(failed === 0 ? 0 : 1)
