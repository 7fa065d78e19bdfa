<?php
// Publish a message to Nudge with phpredis (in Laravel: Redis::connection()->client()).
// Predis works the same way: new Nudge\Producer(new Predis\Client($url), [...]).

require __DIR__ . '/../autoload.php'; // with Composer: require 'vendor/autoload.php';

$redis = new Redis();
$redis->connect(getenv('NUDGE_REDIS_HOST') ?: '127.0.0.1', (int) (getenv('NUDGE_REDIS_PORT') ?: 6379));

// The prefix and the number of shards must be Nudge's (ingest -prefix, -shards).
$nudge = new Nudge\Producer($redis, ['prefix' => getenv('NUDGE_PREFIX') ?: 'nudge', 'shards' => (int) (getenv('NUDGE_SHARDS') ?: 8)]);

$entry = $nudge->publish([
    'type' => 'message.sent', 'app' => 'chat', 'conversation' => 'c-42', 'message' => 'm-1', 'sender' => 'alice',
    'recipients' => ['bob', 'carol'], 'preview' => 'Lunch at noon?', 'conversation_title' => 'Team chat',
]);
echo "published {$entry}\n";
