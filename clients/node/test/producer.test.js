// Tests of @nudgehq/producer against a real Redis, with both clients. The
// Go test clients/clients_test.go runs them beside a real ingest and checks
// that Nudge applied what they report: every event once, retries
// deduplicated. Settings: NUDGE_TEST_REDIS_URL, NUDGE_TEST_PREFIX,
// NUDGE_TEST_SHARDS, NUDGE_TEST_REPORT (a JSON file written at the end).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { createClient } from 'redis';
import Redis from 'ioredis';
import * as zlib from 'node:zlib';
import { Producer, InvalidEventError, validate, shardOf, routingKey, crc32Table } from '../index.js';

const url = process.env.NUDGE_TEST_REDIS_URL ?? 'redis://127.0.0.1:6379/0';
const prefix = process.env.NUDGE_TEST_PREFIX ?? `nudge-node-test-${process.pid}`;
const shards = Number(process.env.NUDGE_TEST_SHARDS ?? 4);
const published = new Map(); // event id -> entries added
const run = `${process.pid}`;
const note = (id, n = 1) => published.set(id, (published.get(id) ?? 0) + n);

after(() => {
  if (process.env.NUDGE_TEST_REPORT) {
    const entries = [...published.values()].reduce((a, b) => a + b, 0);
    writeFileSync(process.env.NUDGE_TEST_REPORT, JSON.stringify({ distinct: published.size, entries }));
  }
});

const clients = {
  'node-redis': async () => {
    const c = await createClient({ url }).connect();
    return { c, close: () => c.quit(), xlen: (k) => c.xLen(k) };
  },
  ioredis: async () => {
    const c = new Redis(url);
    return { c, close: () => c.quit(), xlen: (k) => c.xlen(k) };
  },
};

function events(tag) {
  const conv = `c-${tag}-${run}`;
  return [
    { type: 'device.registered', app: 'chat', user: `bob-${tag}`, platform: 'fcm', token: `tok-${tag}-${run}`, locale: 'de-DE' },
    { type: 'message.sent', app: 'chat', conversation: conv, message: 'm1', sender: 'alice', recipients: ['alice', `bob-${tag}`, `carol-${tag}`], preview: 'Grüße 👋', conversation_title: 'Team chat' },
    { type: 'message.sent', app: 'chat', conversation: conv, message: 'm2', sender: `bob-${tag}`, recipients: ['alice'] },
    { type: 'conversation.read', app: 'chat', conversation: conv, user: `carol-${tag}` },
    { type: 'presence', app: 'chat', user: `bob-${tag}`, status: 'online', device: 'phone' },
    { type: 'prefs.updated', app: 'chat', user: `bob-${tag}`, time_zone: 'Europe/Berlin', quiet_hours: { start: '22:00', end: '07:00' }, previews: 'sender' },
  ];
}

test('the shard is CRC-32 modulo the shards, as Nudge computes it', () => {
  assert.equal(shardOf('c-42', 8), 5);
  assert.equal(shardOf('bob', 8), 0);
  for (const key of ['c-42', 'bob', 'conv:é~@', '']) {
    assert.equal(crc32Table(key) % 8, shardOf(key, 8), key);
    if (typeof zlib.crc32 === 'function') assert.equal(crc32Table(key), zlib.crc32(key), key);
  }
  assert.equal(crc32Table('The quick brown fox jumps over the lazy dog'), 0x414fa339);
  assert.equal(routingKey({ type: 'message.sent', conversation: 'c' }), 'c');
  assert.equal(routingKey({ type: 'presence', user: 'u' }), 'u');
});

test('bad events are refused before anything is sent, naming the field', () => {
  const ok = { v: 1, id: 'e1', ts: 1767225600000, type: 'presence', user: 'u', status: 'online' };
  validate(ok);
  for (const [field, ev] of [
    ['ts', { ...ok, ts: 1767225600 }],
    ['type', { ...ok, type: 'presence.changed' }],
    ['user', { ...ok, user: 'a|b' }],
    ['status', { ...ok, status: 'away' }],
    ['recipients', { ...ok, type: 'message.sent', conversation: 'c', message: 'm', sender: 's', recipients: [] }],
    ['preview', { ...ok, type: 'message.sent', conversation: 'c', message: 'm', sender: 's', recipients: ['r'], preview: 'é'.repeat(2049) }],
    ['locale', { ...ok, type: 'device.registered', platform: 'fcm', token: 't', locale: '<script>' }],
    ['time_zone', { ...ok, type: 'prefs.updated', time_zone: 'Mars/Olympus' }],
    ['time_zone', { ...ok, type: 'prefs.updated' }],
    ['app', { ...ok, app: 'bad app' }],
  ]) {
    assert.throws(() => validate(ev), (err) => err instanceof InvalidEventError && err.field === field, `${field}: ${JSON.stringify(ev).slice(0, 80)}`);
  }
});

for (const [name, open] of Object.entries(clients)) {
  test(`${name}: a batch reaches its shard streams, in one pipeline`, async () => {
    const { c, close, xlen } = await open();
    try {
      const nudge = new Producer(c, { prefix, shards });
      const evs = events(name);
      const ids = await nudge.publishBatch(evs);
      assert.equal(ids.length, evs.length);
      for (const id of ids) assert.match(id, /^\d+-\d+$/);
      // validate() gave each an id; the entries are in the routing key's stream.
      const stream = nudge.stream(evs[1].conversation);
      assert.ok((await xlen(stream)) >= 2);
      const distinct = new Set();
      for (const e of evs) distinct.add(e.id ?? '');
      // publishBatch fills id and ts on copies: read them back from the streams.
      const all = [];
      for (let s = 0; s < shards; s++) {
        const entries = name === 'ioredis'
          ? (await c.xrange(`${prefix}:{s${s}}:events`, '-', '+')).map(([, f]) => f[1])
          : (await c.xRange(`${prefix}:{s${s}}:events`, '-', '+')).map((m) => m.message.event);
        all.push(...entries.map((j) => JSON.parse(j)).filter((e) => JSON.stringify(e).includes(name)));
      }
      assert.equal(all.length, evs.length);
      for (const e of all) note(e.id);
    } finally {
      await close();
    }
  });

  test(`${name}: one bad event in a batch sends nothing`, async () => {
    const { c, close, xlen } = await open();
    try {
      const nudge = new Producer(c, { prefix, shards });
      const good = { type: 'presence', user: `u-bad-${name}`, status: 'online' };
      const before = await xlen(nudge.stream(good.user));
      await assert.rejects(nudge.publishBatch([good, { type: 'presence', user: 'u', status: 'away' }]), InvalidEventError);
      assert.equal(await xlen(nudge.stream(good.user)), before);
    } finally {
      await close();
    }
  });
}

test('a retry after a lost answer keeps the id (Nudge applies it once)', async () => {
  const c = new Redis(url);
  try {
    // The first pipeline reaches Redis, then its answer is lost.
    const pipeline = c.pipeline.bind(c);
    let lost = 0;
    c.pipeline = () => {
      const p = pipeline();
      const exec = p.exec.bind(p);
      p.exec = async () => {
        const r = await exec();
        if (lost++ === 0) throw new Error('connection reset after the request was written');
        return r;
      };
      return p;
    };
    const nudge = new Producer(c, { prefix, shards, retryDelayMs: 1 });
    const ev = { type: 'message.sent', id: `retry-${run}`, conversation: `c-retry-${run}`, message: 'm1', sender: 'alice', recipients: ['bob'] };
    await nudge.publish(ev);
    assert.equal(lost, 2);
    note(ev.id, 2); // added twice, the same id
  } finally {
    await c.quit();
  }
});

test('the example of docs/events.md runs as written', () => {
  const out = execFileSync(process.execPath, ['examples/publish.js'], {
    env: { ...process.env, NUDGE_REDIS_URL: url, NUDGE_PREFIX: prefix, NUDGE_SHARDS: String(shards) },
    encoding: 'utf8',
  });
  assert.match(out, /^published \d+-\d+$/m);
  note(`example-${run}`); // its event has a random id: one distinct, one entry
});
