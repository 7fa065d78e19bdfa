<?php

declare(strict_types=1);

namespace Nudge;

/**
 * Publishes chat events to Nudge's shard streams.
 *
 * The same surface as Nudge's Go producer: every event is validated against
 * contract v1 before anything is sent (docs/events.md), goes to the shard
 * stream of its routing key (CRC-32 of the conversation for messages and
 * reads, of the user otherwise, modulo the number of shards), carries a
 * unique id, and is added with XADD ... MAXLEN ~ under the field "event".
 * A batch is one pipeline. A failed publish is retried with the same JSON,
 * so the same id: Nudge applies an event once however often it arrives
 * within its dedupe window (10 minutes by default).
 *
 * Takes a phpredis (\Redis, as Laravel's Redis::connection()->client()) or
 * a Predis (\Predis\ClientInterface) client.
 */
final class Producer
{
    public const MAX_EVENT_BYTES = 65536;
    public const MAX_PREVIEW_BYTES = 4096;
    public const MAX_TITLE_BYTES = 1024;
    public const MAX_TOKEN_BYTES = 4096;
    public const MAX_RECIPIENTS = 10000;
    public const MAX_PREFS_CONVERSATIONS = 1000;
    public const MAX_REMINDER_DELAY_S = 604800;

    private const TYPES = ['message.sent', 'conversation.read', 'presence', 'device.registered', 'device.removed', 'prefs.updated'];
    private const ID = '/^[A-Za-z0-9._@:~-]{1,128}$/';
    private const APP = '/^[A-Za-z0-9._-]{1,64}$/';
    private const CLOCK = '/^([01][0-9]|2[0-3]):[0-5][0-9]$/';
    private const TOPIC = '/^[A-Za-z0-9.-]{0,255}$/';
    // The contract's locale pattern (event.LocalePattern).
    private const LOCALE = '/^(?:(?:[A-Za-z]{2,3}(?:[-_][A-Za-z]{3}){0,3}|[A-Za-z]{4,8})(?:[-_][A-Za-z]{4})?(?:[-_](?:[A-Za-z]{2}|[0-9]{3}))?(?:[-_](?:[A-Za-z0-9]{5,8}|[0-9][A-Za-z0-9]{3}))*(?:[-_][0-9A-WY-Za-wy-z](?:[-_][A-Za-z0-9]{2,8})+)*(?:[-_][Xx](?:[-_][A-Za-z0-9]{1,8})+)?|[Xx](?:[-_][A-Za-z0-9]{1,8})+)$/';
    private const MIN_TS = 946684800000;  // 2000-01-01 in ms: a ts in seconds is refused
    private const MAX_TS = 4102444800000; // 2100-01-01

    private string $prefix;
    private int $shards;
    private int $maxLen;
    private int $retries;
    private int $retryDelayMs;

    /**
     * @param \Redis|\Predis\ClientInterface $client
     * @param array{prefix?: string, shards?: int, maxLen?: int, retries?: int, retryDelayMs?: int} $options
     *   prefix and shards must be Nudge's (defaults "nudge" and 8); maxLen is the MAXLEN ~
     *   backstop of each stream (default 1,000,000; 0: none); retries are the tries after the
     *   first (default 3), the first wait retryDelayMs (default 100), doubled each time.
     */
    public function __construct(private readonly object $client, array $options = [])
    {
        if (!$client instanceof \Redis && !$client instanceof \Predis\ClientInterface) {
            throw new \InvalidArgumentException('nudge: want a phpredis \\Redis or a Predis client, got ' . get_class($client));
        }
        $this->prefix = $options['prefix'] ?? 'nudge';
        $this->shards = $options['shards'] ?? 8;
        $this->maxLen = $options['maxLen'] ?? 1000000;
        $this->retries = $options['retries'] ?? 3;
        $this->retryDelayMs = $options['retryDelayMs'] ?? 100;
        if ($this->shards < 1 || $this->shards > 1024) {
            throw new \InvalidArgumentException('nudge: shards: want 1 to 1024');
        }
    }

    /** The shard of a routing key: CRC-32 (IEEE) modulo the shards, as Nudge computes it. */
    public static function shardOf(string $key, int $shards = 8): int
    {
        return crc32($key) % $shards;
    }

    /** The id that picks an event's shard. */
    public static function routingKey(array $event): string
    {
        $type = $event['type'] ?? '';
        return (string) ($type === 'message.sent' || $type === 'conversation.read' ? $event['conversation'] : $event['user']);
    }

    /** A unique event id (a random UUID). */
    public static function newId(): string
    {
        $b = random_bytes(16);
        $b[6] = chr(ord($b[6]) & 0x0f | 0x40);
        $b[8] = chr(ord($b[8]) & 0x3f | 0x80);
        return vsprintf('%s%s-%s-%s-%s-%s%s%s', str_split(bin2hex($b), 4));
    }

    /** The shard stream of a routing key. */
    public function stream(string $routingKey): string
    {
        return sprintf('%s:{s%d}:events', $this->prefix, self::shardOf($routingKey, $this->shards));
    }

    /**
     * Validates an event and adds it to its shard stream; returns the entry id. An event
     * without id or ts gets them.
     */
    public function publish(array $event): string
    {
        return $this->publishBatch([$event])[0];
    }

    /**
     * Validates every event first (one invalid event: nothing is sent), then adds them in one
     * pipeline, retrying those that failed with the same JSON. Returns the entry ids in order.
     *
     * @param list<array> $events
     * @return list<string>
     */
    public function publishBatch(array $events): array
    {
        $adds = [];
        foreach ($events as $event) {
            $event = ['v' => 1] + $event;
            $event['id'] ??= self::newId();
            $event['ts'] ??= (int) floor(microtime(true) * 1000);
            $json = self::validate($event);
            $adds[] = [$this->stream(self::routingKey($event)), $json];
        }
        $ids = [];
        $todo = array_keys($adds);
        for ($attempt = 0; ; $attempt++) {
            $last = null;
            try {
                $replies = $this->pipeline(array_map(fn ($i) => $adds[$i], $todo));
            } catch (\Throwable $e) {
                $replies = array_fill(0, count($todo), $e); // the whole pipeline failed
            }
            $again = [];
            foreach ($todo as $j => $i) {
                $r = $replies[$j] ?? null;
                if (is_string($r) && $r !== '') {
                    $ids[$i] = $r;
                } else {
                    $again[] = $i;
                    $last = $r instanceof \Throwable ? $r : new \RuntimeException('XADD failed: ' . var_export($r, true));
                }
            }
            if ($again === []) {
                ksort($ids);
                return array_values($ids);
            }
            if ($attempt >= $this->retries) {
                throw new \RuntimeException(sprintf('nudge: %d of %d events not published after %d tries: %s',
                    count($again), count($adds), $attempt + 1, $last->getMessage()), 0, $last);
            }
            $todo = $again;
            usleep($this->retryDelayMs * 1000 * (2 ** $attempt));
        }
    }

    /**
     * @param list<array{0: string, 1: string}> $adds stream and JSON of each event
     * @return list<mixed> the entry id of each, or what failed
     */
    private function pipeline(array $adds): array
    {
        $c = $this->client;
        if ($c instanceof \Redis) {
            $c->pipeline();
            foreach ($adds as [$stream, $json]) {
                $c->xAdd($stream, '*', ['event' => $json], $this->maxLen, $this->maxLen > 0);
            }
            $replies = $c->exec();
            return is_array($replies) ? array_values($replies) : array_fill(0, count($adds), null);
        }
        $maxLen = $this->maxLen;
        $replies = $c->pipeline(function ($pipe) use ($adds, $maxLen) {
            foreach ($adds as [$stream, $json]) {
                $args = $maxLen > 0 ? [$stream, 'MAXLEN', '~', (string) $maxLen, '*', 'event', $json] : [$stream, '*', 'event', $json];
                $pipe->executeCommand(\Predis\Command\RawCommand::create('XADD', ...$args));
            }
        });
        return array_map(fn ($r) => $r instanceof \Predis\Response\ErrorInterface ? new \RuntimeException($r->getMessage()) : $r, $replies);
    }

    /**
     * Checks an event against contract v1 and returns its JSON.
     *
     * @throws InvalidEvent naming the first field the contract refuses
     */
    public static function validate(array $e): string
    {
        if (($e['v'] ?? null) !== 1) {
            throw new InvalidEvent('v', 'want 1');
        }
        if (!in_array($e['type'] ?? null, self::TYPES, true)) {
            throw new InvalidEvent('type', json_encode($e['type'] ?? null) . ' is not an event type of version 1');
        }
        self::id('id', $e['id'] ?? null);
        $ts = $e['ts'] ?? null;
        if (!is_int($ts) || $ts < self::MIN_TS || $ts > self::MAX_TS) {
            throw new InvalidEvent('ts', 'want unix milliseconds between 2000 and 2100');
        }
        if (isset($e['app']) && $e['app'] !== '' && (!is_string($e['app']) || !preg_match(self::APP, $e['app']))) {
            throw new InvalidEvent('app', 'app names are 1 to 64 of A-Z a-z 0-9 . _ -');
        }
        switch ($e['type']) {
            case 'message.sent':
                self::id('conversation', $e['conversation'] ?? null);
                self::id('message', $e['message'] ?? null);
                self::id('sender', $e['sender'] ?? null);
                self::ids('recipients', $e['recipients'] ?? null, 1);
                if (array_key_exists('mentions', $e)) {
                    self::ids('mentions', $e['mentions'], 0);
                }
                self::text('preview', $e['preview'] ?? null, self::MAX_PREVIEW_BYTES);
                self::text('conversation_title', $e['conversation_title'] ?? null, self::MAX_TITLE_BYTES);
                break;
            case 'conversation.read':
                self::id('conversation', $e['conversation'] ?? null);
                self::id('user', $e['user'] ?? null);
                self::id('upto', $e['upto'] ?? null, false);
                break;
            case 'presence':
                self::id('user', $e['user'] ?? null);
                if (!in_array($e['status'] ?? null, ['online', 'offline', 'heartbeat'], true)) {
                    throw new InvalidEvent('status', 'want online, offline or heartbeat');
                }
                self::id('device', $e['device'] ?? null, false);
                break;
            case 'device.registered':
            case 'device.removed':
                self::id('user', $e['user'] ?? null);
                if (!in_array($e['platform'] ?? null, ['fcm', 'apns'], true)) {
                    throw new InvalidEvent('platform', 'want fcm or apns');
                }
                $token = $e['token'] ?? null;
                if (!is_string($token) || !preg_match('/^[!-~]+$/', $token)) {
                    throw new InvalidEvent('token', 'required: printable ASCII without spaces');
                }
                if (strlen($token) > self::MAX_TOKEN_BYTES) {
                    throw new InvalidEvent('token', strlen($token) . ' bytes, limit ' . self::MAX_TOKEN_BYTES);
                }
                $locale = $e['locale'] ?? '';
                if ($locale !== '' && (!is_string($locale) || strlen($locale) > 35 || !preg_match(self::LOCALE, $locale))) {
                    throw new InvalidEvent('locale', 'want a BCP 47 language tag such as de-DE');
                }
                if (isset($e['topic']) && (!is_string($e['topic']) || !preg_match(self::TOPIC, $e['topic']))) {
                    throw new InvalidEvent('topic', 'a bundle id: letters, digits, . and -');
                }
                break;
            case 'prefs.updated':
                self::id('user', $e['user'] ?? null);
                $convs = !empty($e['conversations']) ? $e['conversations'] : null;
                if (!isset($e['time_zone']) && !isset($e['quiet_hours']) && !isset($e['reminder_delay_s']) && $convs === null && !isset($e['previews'])) {
                    throw new InvalidEvent('time_zone', 'a prefs.updated event sets at least one preference');
                }
                if (isset($e['time_zone']) && $e['time_zone'] !== '' && !in_array($e['time_zone'], \DateTimeZone::listIdentifiers(\DateTimeZone::ALL_WITH_BC), true)) {
                    throw new InvalidEvent('time_zone', json_encode($e['time_zone']) . ' is not an IANA time zone');
                }
                if (isset($e['quiet_hours'])) {
                    $q = $e['quiet_hours'];
                    if (!is_array($q) || !preg_match(self::CLOCK, (string) ($q['start'] ?? ''))) {
                        throw new InvalidEvent('quiet_hours.start', 'want HH:MM');
                    }
                    if (!preg_match(self::CLOCK, (string) ($q['end'] ?? ''))) {
                        throw new InvalidEvent('quiet_hours.end', 'want HH:MM');
                    }
                }
                if (isset($e['reminder_delay_s']) && (!is_int($e['reminder_delay_s']) || $e['reminder_delay_s'] < 0 || $e['reminder_delay_s'] > self::MAX_REMINDER_DELAY_S)) {
                    throw new InvalidEvent('reminder_delay_s', 'want 0 to ' . self::MAX_REMINDER_DELAY_S . ' seconds');
                }
                if ($convs !== null) {
                    if (!is_array($convs) || count($convs) > self::MAX_PREFS_CONVERSATIONS) {
                        throw new InvalidEvent('conversations', 'want at most ' . self::MAX_PREFS_CONVERSATIONS . ' conversations');
                    }
                    foreach ($convs as $conv => $mode) {
                        self::id('conversations', (string) $conv);
                        if (!in_array($mode, ['all', 'mentions', 'muted'], true)) {
                            throw new InvalidEvent('conversations', 'a mode is all, mentions or muted');
                        }
                    }
                }
                if (isset($e['previews']) && !in_array($e['previews'], ['', 'show', 'sender', 'hidden'], true)) {
                    throw new InvalidEvent('previews', 'want show, sender, hidden or ""');
                }
                break;
        }
        $json = json_encode($e, JSON_UNESCAPED_UNICODE | JSON_UNESCAPED_SLASHES | JSON_THROW_ON_ERROR);
        if (strlen($json) > self::MAX_EVENT_BYTES) {
            throw new InvalidEvent('event', strlen($json) . ' bytes, limit ' . self::MAX_EVENT_BYTES);
        }
        return $json;
    }

    private static function id(string $field, mixed $v, bool $required = true): void
    {
        if ($v === null || $v === '') {
            if ($required) {
                throw new InvalidEvent($field, 'required');
            }
            return;
        }
        if (!is_string($v) || !preg_match(self::ID, $v)) {
            throw new InvalidEvent($field, 'ids are 1 to 128 of A-Z a-z 0-9 . _ @ : ~ -');
        }
    }

    private static function ids(string $field, mixed $list, int $min): void
    {
        if (!is_array($list) || !array_is_list($list)) {
            throw new InvalidEvent($field, 'want a list of ids');
        }
        if (count($list) < $min) {
            throw new InvalidEvent($field, "at least {$min} required");
        }
        if (count($list) > self::MAX_RECIPIENTS) {
            throw new InvalidEvent($field, count($list) . ', limit ' . self::MAX_RECIPIENTS);
        }
        foreach ($list as $id) {
            self::id($field, $id);
        }
    }

    private static function text(string $field, mixed $v, int $max): void
    {
        if ($v === null) {
            return;
        }
        if (!is_string($v) || preg_match('//u', $v) !== 1) {
            throw new InvalidEvent($field, 'want UTF-8 text');
        }
        if (strlen($v) > $max) {
            throw new InvalidEvent($field, strlen($v) . " bytes, limit {$max}");
        }
    }
}
