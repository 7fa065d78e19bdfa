// Types of @nudgehq/producer. The event contract: docs/events.md.

export interface BaseEvent {
  v?: 1;
  /** Unique id; a retry keeps it. Default: a random UUID. */
  id?: string;
  /** Unix milliseconds. Default: now. */
  ts?: number;
  /** App or tenant; default "default". */
  app?: string;
}

export interface MessageSent extends BaseEvent {
  type: 'message.sent';
  conversation: string;
  message: string;
  sender: string;
  recipients: string[];
  mentions?: string[];
  preview?: string;
  conversation_title?: string;
}

export interface ConversationRead extends BaseEvent {
  type: 'conversation.read';
  conversation: string;
  user: string;
  upto?: string;
}

export interface Presence extends BaseEvent {
  type: 'presence';
  user: string;
  status: 'online' | 'offline' | 'heartbeat';
  device?: string;
}

export interface Device extends BaseEvent {
  type: 'device.registered' | 'device.removed';
  user: string;
  platform: 'fcm' | 'apns';
  token: string;
  locale?: string;
  topic?: string;
}

export interface PrefsUpdated extends BaseEvent {
  type: 'prefs.updated';
  user: string;
  time_zone?: string;
  quiet_hours?: { start: string; end: string };
  reminder_delay_s?: number;
  conversations?: Record<string, 'all' | 'mentions' | 'muted'>;
  previews?: '' | 'show' | 'sender' | 'hidden';
}

export type NudgeEvent = MessageSent | ConversationRead | Presence | Device | PrefsUpdated;

export interface ProducerOptions {
  /** Key prefix; must match Nudge's. Default "nudge". */
  prefix?: string;
  /** Shard streams; must match Nudge's. Default 8. */
  shards?: number;
  /** XADD MAXLEN ~ backstop per stream; 0 or less: none. Default 1,000,000. */
  maxLen?: number;
  /** Tries after the first for events that failed. Default 3. */
  retries?: number;
  /** First wait between tries, doubled each time. Default 100. */
  retryDelayMs?: number;
}

/** An event the contract refuses; nothing was sent. */
export class InvalidEventError extends Error {
  field: string;
}

export const limits: Readonly<{
  eventBytes: number; idBytes: number; appBytes: number; previewBytes: number; titleBytes: number;
  tokenBytes: number; topicBytes: number; recipients: number; prefsConversations: number; reminderDelayS: number;
}>;

/** Checks an event against contract v1 and returns its JSON; throws InvalidEventError. */
export function validate(ev: NudgeEvent): string;
/** The id that picks an event's shard. */
export function routingKey(ev: NudgeEvent): string;
/** CRC-32 (IEEE) of the key modulo the shards. */
export function shardOf(key: string, shards?: number): number;
/** CRC-32 (IEEE) of a string's UTF-8 bytes. */
export function crc32Table(s: string): number;
/** A unique event id. */
export function newID(): string;

/** A node-redis v4+ or ioredis v5+ client. */
export type RedisClient = object;

export class Producer {
  constructor(client: RedisClient, options?: ProducerOptions);
  stream(routingKey: string): string;
  publish(ev: NudgeEvent): Promise<string>;
  publishBatch(events: NudgeEvent[]): Promise<string[]>;
}
