<?php
// Tests of the PHP producer against a real Redis, with phpredis and Predis:
// php tests/run.php. The Go test clients/clients_test.go runs them beside a
// real ingest and checks that Nudge applied what they report: every event
// once, retries deduplicated. Settings: NUDGE_TEST_REDIS_HOST,
// NUDGE_TEST_REDIS_PORT, NUDGE_TEST_PREFIX, NUDGE_TEST_SHARDS,
// NUDGE_TEST_REPORT (a JSON file written at the end). No Composer needed:
// Predis comes from Debian's php-nrk-predis.

declare(strict_types=1);

require __DIR__ . '/../autoload.php';
require 'Predis/Autoloader.php';
Predis\Autoloader::register();

use Nudge\InvalidEvent;
use Nudge\Producer;

$host = getenv('NUDGE_TEST_REDIS_HOST') ?: '127.0.0.1';
$port = (int) (getenv('NUDGE_TEST_REDIS_PORT') ?: 6379);
$prefix = getenv('NUDGE_TEST_PREFIX') ?: 'nudge-php-test-' . getmypid();
$shards = (int) (getenv('NUDGE_TEST_SHARDS') ?: 4);
$run = (string) getmypid();
$published = []; // event id => entries added
$failures = 0;

function check(bool $ok, string $what): void
{
    global $failures;
    if (!$ok) {
        $failures++;
        fwrite(STDERR, "FAIL: {$what}\n");
    }
}

function test(string $name, callable $f): void
{
    global $failures;
    try {
        $f();
        echo "ok - {$name}\n";
    } catch (Throwable $e) {
        $failures++;
        fwrite(STDERR, "FAIL: {$name}: " . get_class($e) . ': ' . $e->getMessage() . "\n");
    }
}

$clients = [
    'phpredis' => function () use ($host, $port) {
        $r = new Redis();
        $r->connect($host, $port);
        return $r;
    },
    'predis' => fn () => new Predis\Client(['host' => $host, 'port' => $port]),
];

function xrangeAll(object $c, string $stream): array
{
    if ($c instanceof Redis) {
        return array_map(fn ($f) => $f['event'], $c->xRange($stream, '-', '+') ?: []);
    }
    $out = [];
    foreach ($c->executeRaw(['XRANGE', $stream, '-', '+']) ?: [] as [$id, $fields]) {
        $out[] = $fields[1];
    }
    return $out;
}

function xlen(object $c, string $stream): int
{
    return $c instanceof Redis ? (int) $c->xLen($stream) : (int) $c->executeRaw(['XLEN', $stream]);
}

test('the shard is CRC-32 modulo the shards, as Nudge computes it', function () {
    check(Producer::shardOf('c-42', 8) === 5, 'shardOf(c-42, 8) = ' . Producer::shardOf('c-42', 8));
    check(Producer::shardOf('bob', 8) === 0, 'shardOf(bob, 8)');
    check(Producer::routingKey(['type' => 'message.sent', 'conversation' => 'c']) === 'c', 'routing key of a message');
    check(Producer::routingKey(['type' => 'presence', 'user' => 'u']) === 'u', 'routing key of presence');
    check(preg_match('/^[0-9a-f-]{36}$/', Producer::newId()) === 1, 'newId is a UUID');
});

test('bad events are refused before anything is sent, naming the field', function () {
    $ok = ['v' => 1, 'id' => 'e1', 'ts' => 1767225600000, 'type' => 'presence', 'user' => 'u', 'status' => 'online'];
    Producer::validate($ok);
    $msg = ['type' => 'message.sent', 'conversation' => 'c', 'message' => 'm', 'sender' => 's'];
    foreach ([
        ['ts', ['ts' => 1767225600] + $ok],
        ['type', ['type' => 'presence.changed'] + $ok],
        ['user', ['user' => 'a|b'] + $ok],
        ['status', ['status' => 'away'] + $ok],
        ['recipients', $msg + ['recipients' => []] + $ok],
        ['preview', $msg + ['recipients' => ['r'], 'preview' => str_repeat('é', 2049)] + $ok],
        ['preview', $msg + ['recipients' => ['r'], 'preview' => "\xff\xfe"] + $ok],
        ['locale', ['type' => 'device.registered', 'platform' => 'fcm', 'token' => 't', 'locale' => '<script>'] + $ok],
        ['time_zone', ['type' => 'prefs.updated', 'time_zone' => 'Mars/Olympus'] + $ok],
        ['time_zone', ['type' => 'prefs.updated'] + $ok],
        ['app', ['app' => 'bad app'] + $ok],
    ] as [$field, $ev]) {
        try {
            Producer::validate($ev);
            check(false, "{$field}: accepted " . substr(json_encode($ev, JSON_INVALID_UTF8_SUBSTITUTE), 0, 80));
        } catch (InvalidEvent $e) {
            check($e->field === $field, "{$field}: refused as {$e->field}: {$e->getMessage()}");
        }
    }
});

foreach ($clients as $name => $open) {
    test("{$name}: a batch reaches its shard streams, in one pipeline", function () use ($name, $open, $prefix, $shards, $run, &$published) {
        $c = $open();
        $nudge = new Producer($c, ['prefix' => $prefix, 'shards' => $shards]);
        $tag = "k{$name}"; // "predis" alone is inside "phpredis"
        $conv = "c-{$tag}-{$run}";
        $evs = [
            ['type' => 'device.registered', 'app' => 'chat', 'user' => "bob-{$tag}", 'platform' => 'apns', 'token' => "tok-{$tag}-{$run}", 'locale' => 'pl_PL', 'topic' => 'com.example.chat'],
            ['type' => 'message.sent', 'app' => 'chat', 'conversation' => $conv, 'message' => 'm1', 'sender' => 'alice', 'recipients' => ['alice', "bob-{$tag}", "carol-{$tag}"], 'preview' => 'Zażółć gęślą jaźń', 'conversation_title' => 'Team chat'],
            ['type' => 'conversation.read', 'app' => 'chat', 'conversation' => $conv, 'user' => "carol-{$tag}"],
            ['type' => 'presence', 'app' => 'chat', 'user' => "bob-{$tag}", 'status' => 'heartbeat'],
            ['type' => 'prefs.updated', 'app' => 'chat', 'user' => "bob-{$tag}", 'time_zone' => 'Europe/Warsaw', 'conversations' => [$conv => 'mentions']],
        ];
        $ids = $nudge->publishBatch($evs);
        check(count($ids) === count($evs), 'one entry id per event');
        foreach ($ids as $id) {
            check(preg_match('/^\d+-\d+$/', $id) === 1, "entry id {$id}");
        }
        $seen = 0;
        for ($s = 0; $s < $shards; $s++) {
            foreach (xrangeAll($c, "{$prefix}:{s{$s}}:events") as $json) {
                $e = json_decode($json, true);
                if (str_contains($json, $tag)) {
                    $seen++;
                    $published[$e['id']] = ($published[$e['id']] ?? 0) + 1;
                    check(Producer::shardOf(Producer::routingKey($e), $shards) === $s, "{$e['type']} in shard {$s}");
                }
            }
        }
        check($seen === count($evs), "{$seen} entries of {$tag}, want " . count($evs));
    });

    test("{$name}: one bad event in a batch sends nothing", function () use ($name, $open, $prefix, $shards) {
        $c = $open();
        $nudge = new Producer($c, ['prefix' => $prefix, 'shards' => $shards]);
        $good = ['type' => 'presence', 'user' => "u-bad-{$name}", 'status' => 'online'];
        $before = xlen($c, $nudge->stream($good['user']));
        try {
            $nudge->publishBatch([$good, ['type' => 'presence', 'user' => 'u', 'status' => 'away']]);
            check(false, 'a bad batch was accepted');
        } catch (InvalidEvent $e) {
            check($e->field === 'status', 'refused for its status');
        }
        check(xlen($c, $nudge->stream($good['user'])) === $before, 'nothing sent');
    });
}

test('a retry after a lost answer keeps the id (Nudge applies it once)', function () use ($host, $port, $prefix, $shards, $run, &$published) {
    // A Predis connection that loses the answer of its first pipeline after Redis took it.
    $conn = new class(new Predis\Connection\Parameters(['host' => $host, 'port' => $port])) extends Predis\Connection\StreamConnection {
        public int $lost = 0;

        public function readResponse(Predis\Command\CommandInterface $command)
        {
            $r = parent::readResponse($command);
            if ($this->lost++ === 0) {
                $this->disconnect();
                throw new Predis\Connection\ConnectionException($this, 'connection reset after the request was written');
            }
            return $r;
        }
    };
    $nudge = new Producer(new Predis\Client($conn), ['prefix' => $prefix, 'shards' => $shards, 'retryDelayMs' => 1]);
    $ev = ['type' => 'message.sent', 'id' => "retry-php-{$run}", 'conversation' => "c-retry-php-{$run}", 'message' => 'm1', 'sender' => 'alice', 'recipients' => ['bob']];
    $nudge->publish($ev);
    check($conn->lost >= 2, 'the first answer was lost and the event sent again');
    $published[$ev['id']] = 2; // added twice, the same id
});

test('the example of docs/events.md runs as written', function () use ($host, $port, $prefix, $shards, $run, &$published) {
    $env = sprintf('NUDGE_REDIS_HOST=%s NUDGE_REDIS_PORT=%d NUDGE_PREFIX=%s NUDGE_SHARDS=%d', $host, $port, escapeshellarg($prefix), $shards);
    $out = shell_exec($env . ' ' . escapeshellarg(PHP_BINARY) . ' ' . escapeshellarg(__DIR__ . '/../examples/publish.php') . ' 2>&1');
    check(preg_match('/^published \d+-\d+$/m', (string) $out) === 1, "the example printed: {$out}");
    $published["example-{$run}"] = 1; // its event has a random id: one distinct, one entry
});

if ($report = getenv('NUDGE_TEST_REPORT')) {
    file_put_contents($report, json_encode(['distinct' => count($published), 'entries' => array_sum($published)]));
}
if ($failures > 0) {
    fwrite(STDERR, "{$failures} failed\n");
    exit(1);
}
echo "all passed\n";
