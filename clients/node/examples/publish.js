// Publish a message to Nudge with node-redis (ioredis works the same way).
import { createClient } from 'redis';
import { Producer } from '@nudgehq/producer';

const redis = await createClient({ url: process.env.NUDGE_REDIS_URL ?? 'redis://127.0.0.1:6379' }).connect();
// The prefix and the number of shards must be Nudge's (ingest -prefix, -shards).
const nudge = new Producer(redis, { prefix: process.env.NUDGE_PREFIX ?? 'nudge', shards: Number(process.env.NUDGE_SHARDS ?? 8) });

const entry = await nudge.publish({
  type: 'message.sent', app: 'chat', conversation: 'c-42', message: 'm-1', sender: 'alice',
  recipients: ['bob', 'carol'], preview: 'Lunch at noon?', conversation_title: 'Team chat',
});
console.log('published', entry);
await redis.quit();
