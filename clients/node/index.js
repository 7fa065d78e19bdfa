// @nudgehq/producer: publish chat events to Nudge from Node.
//
// The same surface as Nudge's Go producer (package producer): events are
// validated against contract v1 before anything is sent (docs/events.md,
// schema/event.v1.schema.json), each goes to the shard stream of its
// routing key (CRC-32 of the conversation for messages and reads, of the
// user otherwise, modulo the number of shards), carries a unique id, and
// is added with XADD ... MAXLEN ~ under the entry field "event". A batch
// is one pipeline. A failed publish is retried with the same JSON, so the
// same id: Nudge applies an event once however often it arrives within its
// dedupe window (10 minutes by default).
//
// Works with node-redis v4+ (createClient) and ioredis v5+.

import * as zlib from 'node:zlib';
import { randomUUID } from 'node:crypto';

// CRC-32 (IEEE): zlib's (Node 20.15 and later) or this table's (Debian's
// Node 18), the same function.
const crcTable = new Uint32Array(256).map((_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});

/** crc32Table computes CRC-32 (IEEE) of a string's UTF-8 bytes without zlib. */
export function crc32Table(s) {
  let c = 0xffffffff;
  for (const b of Buffer.from(s, 'utf8')) c = crcTable[(c ^ b) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

const crc32 = typeof zlib.crc32 === 'function' ? (s) => zlib.crc32(s) : crc32Table;

/** The contract's limits (docs/events.md). */
export const limits = Object.freeze({
  eventBytes: 64 << 10,
  idBytes: 128,
  appBytes: 64,
  previewBytes: 4096,
  titleBytes: 1024,
  tokenBytes: 4096,
  topicBytes: 255,
  recipients: 10000,
  prefsConversations: 1000,
  reminderDelayS: 7 * 24 * 3600,
});

const types = new Set(['message.sent', 'conversation.read', 'presence', 'device.registered', 'device.removed', 'prefs.updated']);
const idPattern = /^[A-Za-z0-9._@:~-]{1,128}$/;
const appPattern = /^[A-Za-z0-9._-]{1,64}$/;
const clockPattern = /^([01][0-9]|2[0-3]):[0-5][0-9]$/;
const topicPattern = /^[A-Za-z0-9.-]{0,255}$/;
// The contract's locale pattern (event.LocalePattern).
const localePattern = /^(?:(?:[A-Za-z]{2,3}(?:[-_][A-Za-z]{3}){0,3}|[A-Za-z]{4,8})(?:[-_][A-Za-z]{4})?(?:[-_](?:[A-Za-z]{2}|[0-9]{3}))?(?:[-_](?:[A-Za-z0-9]{5,8}|[0-9][A-Za-z0-9]{3}))*(?:[-_][0-9A-WY-Za-wy-z](?:[-_][A-Za-z0-9]{2,8})+)*(?:[-_][Xx](?:[-_][A-Za-z0-9]{1,8})+)?|[Xx](?:[-_][A-Za-z0-9]{1,8})+)$/;
const minTS = 946684800000; // 2000-01-01 in ms: a ts in seconds is refused
const maxTS = 4102444800000; // 2100-01-01

/** An event the contract refuses; nothing was sent. */
export class InvalidEventError extends Error {
  constructor(field, message) {
    super(`nudge: invalid event: ${field}: ${message}`);
    this.name = 'InvalidEventError';
    this.field = field;
  }
}

const bytes = (s) => Buffer.byteLength(s, 'utf8');
const fail = (field, message) => { throw new InvalidEventError(field, message); };

function checkID(field, v, required = true) {
  if (v === undefined || v === null || v === '') {
    if (required) fail(field, 'required');
    return;
  }
  if (typeof v !== 'string' || !idPattern.test(v)) fail(field, 'ids are 1 to 128 of A-Z a-z 0-9 . _ @ : ~ -');
}

function checkIDs(field, list, min) {
  if (!Array.isArray(list)) fail(field, 'want an array of ids');
  if (list.length < min) fail(field, `at least ${min} required`);
  if (list.length > limits.recipients) fail(field, `${list.length}, limit ${limits.recipients}`);
  list.forEach((id) => checkID(field, id));
}

function checkText(field, v, max) {
  if (v === undefined) return;
  if (typeof v !== 'string') fail(field, 'want a string');
  if (bytes(v) > max) fail(field, `${bytes(v)} bytes, limit ${max}`);
}

function checkTimeZone(tz) {
  if (tz === '') return;
  try {
    new Intl.DateTimeFormat('en', { timeZone: tz });
  } catch {
    fail('time_zone', `${JSON.stringify(tz)} is not an IANA time zone`);
  }
}

/**
 * validate checks an event against contract v1 and returns its JSON.
 * @param {object} ev
 * @returns {string}
 */
export function validate(ev) {
  if (ev === null || typeof ev !== 'object' || Array.isArray(ev)) fail('event', 'want an object');
  if (ev.v !== 1) fail('v', 'want 1');
  if (!types.has(ev.type)) fail('type', `${JSON.stringify(ev.type)} is not an event type of version 1`);
  checkID('id', ev.id);
  if (!Number.isInteger(ev.ts) || ev.ts < minTS || ev.ts > maxTS) fail('ts', 'want unix milliseconds between 2000 and 2100');
  if (ev.app !== undefined && ev.app !== '' && (typeof ev.app !== 'string' || !appPattern.test(ev.app))) {
    fail('app', 'app names are 1 to 64 of A-Z a-z 0-9 . _ -');
  }
  switch (ev.type) {
    case 'message.sent':
      checkID('conversation', ev.conversation);
      checkID('message', ev.message);
      checkID('sender', ev.sender);
      checkIDs('recipients', ev.recipients, 1);
      if (ev.mentions !== undefined) checkIDs('mentions', ev.mentions, 0);
      checkText('preview', ev.preview, limits.previewBytes);
      checkText('conversation_title', ev.conversation_title, limits.titleBytes);
      break;
    case 'conversation.read':
      checkID('conversation', ev.conversation);
      checkID('user', ev.user);
      checkID('upto', ev.upto, false);
      break;
    case 'presence':
      checkID('user', ev.user);
      if (!['online', 'offline', 'heartbeat'].includes(ev.status)) fail('status', 'want online, offline or heartbeat');
      checkID('device', ev.device, false);
      break;
    case 'device.registered':
    case 'device.removed':
      checkID('user', ev.user);
      if (!['fcm', 'apns'].includes(ev.platform)) fail('platform', 'want fcm or apns');
      if (typeof ev.token !== 'string' || !/^[!-~]+$/.test(ev.token)) fail('token', 'required: printable ASCII without spaces');
      if (ev.token.length > limits.tokenBytes) fail('token', `${ev.token.length} bytes, limit ${limits.tokenBytes}`);
      if (ev.locale !== undefined && ev.locale !== '' && (typeof ev.locale !== 'string' || ev.locale.length > 35 || !localePattern.test(ev.locale))) {
        fail('locale', 'want a BCP 47 language tag such as de-DE');
      }
      if (ev.topic !== undefined && (typeof ev.topic !== 'string' || !topicPattern.test(ev.topic))) fail('topic', 'a bundle id: letters, digits, . and -');
      break;
    case 'prefs.updated': {
      checkID('user', ev.user);
      const convs = ev.conversations && Object.keys(ev.conversations).length > 0 ? ev.conversations : undefined;
      if (ev.time_zone === undefined && ev.quiet_hours === undefined && ev.reminder_delay_s === undefined && convs === undefined && ev.previews === undefined) {
        fail('time_zone', 'a prefs.updated event sets at least one preference');
      }
      if (ev.time_zone !== undefined) {
        if (typeof ev.time_zone !== 'string') fail('time_zone', 'want a string');
        checkTimeZone(ev.time_zone);
      }
      if (ev.quiet_hours !== undefined) {
        const q = ev.quiet_hours;
        if (!q || !clockPattern.test(q.start)) fail('quiet_hours.start', 'want HH:MM');
        if (!clockPattern.test(q.end)) fail('quiet_hours.end', 'want HH:MM');
      }
      if (ev.reminder_delay_s !== undefined && (!Number.isInteger(ev.reminder_delay_s) || ev.reminder_delay_s < 0 || ev.reminder_delay_s > limits.reminderDelayS)) {
        fail('reminder_delay_s', `want 0 to ${limits.reminderDelayS} seconds`);
      }
      if (convs !== undefined) {
        const entries = Object.entries(convs);
        if (entries.length > limits.prefsConversations) fail('conversations', `${entries.length}, limit ${limits.prefsConversations}`);
        for (const [conv, mode] of entries) {
          checkID('conversations', conv);
          if (!['all', 'mentions', 'muted'].includes(mode)) fail('conversations', 'a mode is all, mentions or muted');
        }
      }
      if (ev.previews !== undefined && !['', 'show', 'sender', 'hidden'].includes(ev.previews)) fail('previews', 'want show, sender, hidden or ""');
      break;
    }
  }
  const json = JSON.stringify(ev);
  if (bytes(json) > limits.eventBytes) fail('event', `${bytes(json)} bytes, limit ${limits.eventBytes}`);
  return json;
}

/** routingKey is the id that picks an event's shard. */
export function routingKey(ev) {
  return ev.type === 'message.sent' || ev.type === 'conversation.read' ? ev.conversation : ev.user;
}

/** shardOf returns the shard of a routing key: CRC-32 (IEEE) modulo the shards, as Nudge computes it. */
export function shardOf(key, shards = 8) {
  return crc32(key) % shards;
}

/** newID returns a unique event id. */
export function newID() {
  return randomUUID();
}

// The commands of the two clients.
function adapter(client) {
  if (typeof client.xAdd === 'function') { // node-redis
    return {
      async pipeline(adds) {
        const m = client.multi();
        for (const a of adds) {
          m.xAdd(a.stream, '*', { event: a.json }, a.maxLen > 0 ? { TRIM: { strategy: 'MAXLEN', strategyModifier: '~', threshold: a.maxLen } } : undefined);
        }
        const replies = await m.execAsPipeline();
        return replies.map((r) => (r instanceof Error ? r : { id: r }));
      },
    };
  }
  if (typeof client.xadd === 'function' && typeof client.pipeline === 'function') { // ioredis
    return {
      async pipeline(adds) {
        const p = client.pipeline();
        for (const a of adds) {
          if (a.maxLen > 0) p.xadd(a.stream, 'MAXLEN', '~', a.maxLen, '*', 'event', a.json);
          else p.xadd(a.stream, '*', 'event', a.json);
        }
        const replies = await p.exec();
        return replies.map(([err, id]) => (err ? err : { id }));
      },
    };
  }
  throw new TypeError('nudge: want a node-redis (v4+) or ioredis (v5+) client');
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Producer publishes events to Nudge's shard streams.
 */
export class Producer {
  /**
   * @param {object} client a connected node-redis or ioredis client
   * @param {{prefix?: string, shards?: number, maxLen?: number, retries?: number, retryDelayMs?: number}} [options]
   */
  constructor(client, options = {}) {
    this.client = adapter(client);
    this.prefix = options.prefix ?? 'nudge';
    this.shards = options.shards ?? 8;
    this.maxLen = options.maxLen ?? 1_000_000;
    this.retries = options.retries ?? 3;
    this.retryDelayMs = options.retryDelayMs ?? 100;
    if (!Number.isInteger(this.shards) || this.shards < 1 || this.shards > 1024) throw new RangeError('nudge: shards: want 1 to 1024');
  }

  /** stream returns the shard stream of a routing key. */
  stream(key) {
    return `${this.prefix}:{s${shardOf(key, this.shards)}}:events`;
  }

  /**
   * publish validates an event and adds it to its shard stream; it returns the entry id.
   * An event without id or ts gets them.
   */
  async publish(ev) {
    const [id] = await this.publishBatch([ev]);
    return id;
  }

  /**
   * publishBatch validates every event first (one invalid event: nothing is sent), then
   * adds them in one pipeline, retrying the ones that failed with the same JSON. It returns
   * the entry ids in order.
   */
  async publishBatch(events) {
    const adds = events.map((ev) => {
      const e = { v: 1, ...ev };
      if (e.id === undefined) e.id = newID();
      if (e.ts === undefined) e.ts = Date.now();
      const json = validate(e);
      return { stream: this.stream(routingKey(e)), json, maxLen: this.maxLen };
    });
    const ids = new Array(adds.length);
    let todo = adds.map((a, i) => i);
    for (let attempt = 0; ; attempt++) {
      let replies;
      try {
        replies = await this.client.pipeline(todo.map((i) => adds[i]));
      } catch (err) {
        replies = todo.map(() => err); // the whole pipeline failed
      }
      const again = [];
      let last;
      replies.forEach((r, j) => {
        if (r instanceof Error) {
          again.push(todo[j]);
          last = r;
        } else {
          ids[todo[j]] = r.id;
        }
      });
      if (again.length === 0) return ids;
      if (attempt >= this.retries) {
        const e = new Error(`nudge: ${again.length} of ${adds.length} events not published after ${attempt + 1} tries: ${last.message}`);
        e.cause = last;
        throw e;
      }
      todo = again;
      await sleep(this.retryDelayMs * 2 ** attempt);
    }
  }
}
