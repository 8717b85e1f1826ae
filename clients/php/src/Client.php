<?php

declare(strict_types=1);

namespace Notifier;

/**
 * A publisher's client of notifier's api listener.
 *
 *     $client = new Client('http://127.0.0.1:8081', 'mysite', $secret);
 *     $client->createCenter('news');
 *     $id = $client->publish('news', 'Hello');
 *
 * Every request is signed (`Notifier-HMAC-SHA256`), unless the option
 * `'auth' => 'basic'` asks for HTTP Basic credentials instead. The daemon
 * accepts a signed publish (a POST) once only, so each request is signed
 * when it is sent and carries a fresh random `nonce` query parameter: two
 * identical calls within the same second are two different signed requests. Refusals
 * raise NotifierException, transport failures TransportException (one of
 * them); wrong arguments raise \InvalidArgumentException.
 */
final class Client
{
    public const AUTH_HMAC = 'hmac';
    public const AUTH_BASIC = 'basic';

    private const DEFAULTS = [
        'auth' => self::AUTH_HMAC,
        'timeout' => 10.0,          // seconds for a whole request
        'connect_timeout' => 5.0,   // seconds to connect
        'user_agent' => 'notifier-php/1.0',
    ];

    private readonly string $origin;    // scheme://host[:port]
    private readonly string $prefix;    // path of the base URL, without a trailing /
    private readonly string $auth;
    private readonly float $timeout;
    private readonly float $connectTimeout;
    private readonly string $userAgent;
    private ?\CurlHandle $handle = null;

    /**
     * @param string $baseUrl   the api listener, e.g. `http://127.0.0.1:8081`
     * @param string $publisher the publisher's name
     * @param string $secret    the publisher's secret
     * @param array{auth?: 'hmac'|'basic', timeout?: int|float, connect_timeout?: int|float, user_agent?: string} $options
     */
    public function __construct(
        string $baseUrl,
        private readonly string $publisher,
        #[\SensitiveParameter] private readonly string $secret,
        array $options = [],
    ) {
        $unknown = array_diff_key($options, self::DEFAULTS);
        if ($unknown !== []) {
            throw new \InvalidArgumentException('unknown option(s): ' . implode(', ', array_keys($unknown)));
        }
        $options += self::DEFAULTS;

        $url = parse_url($baseUrl);
        if (
            $url === false || !isset($url['scheme'], $url['host'])
            || !in_array(strtolower($url['scheme']), ['http', 'https'], true)
        ) {
            throw new \InvalidArgumentException('the base URL must be an http:// or https:// URL');
        }
        if (isset($url['user']) || isset($url['pass']) || isset($url['query']) || isset($url['fragment'])) {
            throw new \InvalidArgumentException('the base URL takes no credentials, query or fragment');
        }
        $host = str_contains($url['host'], ':') && !str_starts_with($url['host'], '[')
            ? "[{$url['host']}]" : $url['host'];
        $this->origin = strtolower($url['scheme']) . '://' . $host . (isset($url['port']) ? ":{$url['port']}" : '');
        $this->prefix = rtrim($url['path'] ?? '', '/');

        if ($publisher === '' || $secret === '') {
            throw new \InvalidArgumentException('the publisher name and secret are required');
        }
        if (!in_array($options['auth'], [self::AUTH_HMAC, self::AUTH_BASIC], true)) {
            throw new \InvalidArgumentException("the auth option is 'hmac' or 'basic'");
        }
        foreach (['timeout', 'connect_timeout'] as $name) {
            if ((!is_int($options[$name]) && !is_float($options[$name])) || $options[$name] <= 0) {
                throw new \InvalidArgumentException("the {$name} option is a positive number of seconds");
            }
        }
        $this->auth = $options['auth'];
        $this->timeout = (float) $options['timeout'];
        $this->connectTimeout = (float) $options['connect_timeout'];
        $this->userAgent = (string) $options['user_agent'];
    }

    /** var_dump() and print_r() show no secret. */
    public function __debugInfo(): array
    {
        return [
            'baseUrl' => $this->origin . $this->prefix,
            'publisher' => $this->publisher,
            'secret' => '(hidden)',
            'auth' => $this->auth,
            'timeout' => $this->timeout,
        ];
    }

    /**
     * Create the center $name, or find it if it exists (its options are then
     * left as they are). A presence center (`presence`) must be private as
     * well: ask for both, or the daemon refuses it (400 presence_needs_private).
     *
     * @param array{private?: bool, presence?: bool, history?: int, ttl?: int} $options
     * @return array{center: array<string, mixed>, created: bool}
     */
    public function createCenter(string $name, array $options = []): array
    {
        $body = $options === [] ? '' : self::encode((object) $options);
        [$status, $center] = $this->request('PUT', self::centerPath($name), $body, 'application/json');

        return ['center' => $center, 'created' => $status === 201];
    }

    /**
     * The center $name: `name`, `path`, `private`, `presence`, `history`,
     * `ttl`, `subscribers`, `last_id`, `created` (and `members`, their
     * count, for a presence center).
     *
     * @return array<string, mixed>
     */
    public function getCenter(string $name): array
    {
        return $this->request('GET', self::centerPath($name))[1];
    }

    /**
     * Every center of this publisher.
     *
     * @return list<array<string, mixed>>
     */
    public function listCenters(): array
    {
        return $this->request('GET', '/api/v1/centers')[1]['centers'];
    }

    /** Delete the center $name; its subscribers are disconnected. */
    public function deleteCenter(string $name): void
    {
        $this->request('DELETE', self::centerPath($name));
    }

    /**
     * Who is in the presence center $center: `count` and `members`, a list
     * of `['uid' => string, 'info' => ?array]` sorted by uid. A center
     * without presence is refused (400 `no_presence`).
     *
     * @return array{count: int, members: list<array{uid: string, info: array<string, mixed>|null}>}
     */
    public function presence(string $center): array
    {
        return $this->request('GET', self::centerPath($center) . '/presence')[1];
    }

    /**
     * Publish $text (UTF-8) to the center $center; the message's id.
     *
     * With an $idempotencyKey, a retry of the same publish (same key, within
     * ten minutes) is delivered once only and answers the first id.
     */
    public function publish(string $center, string $text, ?string $idempotencyKey = null): string
    {
        $path = self::centerPath($center) . '/messages';
        return $this->request('POST', $path, $text, 'text/plain; charset=utf-8', $idempotencyKey)[1]['id'];
    }

    /**
     * Publish several messages at once, all or none; their ids, in order.
     *
     * @param list<array{center: string, data: string}> $messages
     * @return list<string>
     */
    public function publishBatch(array $messages, ?string $idempotencyKey = null): array
    {
        if ($messages === []) {
            throw new \InvalidArgumentException('a batch holds at least one message');
        }
        $entries = [];
        foreach (array_values($messages) as $i => $message) {
            if (!is_array($message) || !isset($message['center'], $message['data'])
                || !is_string($message['center']) || !is_string($message['data'])
                || count($message) !== 2) {
                throw new \InvalidArgumentException("messages[{$i}] must be ['center' => string, 'data' => string]");
            }
            $entries[] = ['center' => $message['center'], 'data' => $message['data']];
        }
        $body = self::encode(['messages' => $entries]);

        return $this->request('POST', '/api/v1/messages', $body, 'application/json', $idempotencyKey)[1]['ids'];
    }

    /**
     * A subscriber token (JWT) for a private center, or for every center of
     * a list (a name ending in `*` grants every center it prefixes), valid
     * for $ttlSeconds. The browser passes it as `token=`.
     *
     * A presence center needs $uid, who the holder is (1 to 128 characters),
     * and may be told $info about them (an associative array, at most 1 KiB
     * as JSON), which every member sees: see SubscriberToken::create().
     *
     * @param string|list<string> $centers
     * @param array<string, mixed>|null $info
     */
    public function subscriberToken(
        string|array $centers,
        int $ttlSeconds = 3600,
        ?string $uid = null,
        ?array $info = null,
    ): string {
        return SubscriberToken::create($this->secret, $centers, $ttlSeconds, null, $uid, $info);
    }

    /**
     * Have the daemon POST the $events named (Webhook::EVENTS, all of them
     * by default) to $url, an http or https URL of the site, replacing any
     * webhook set before; the webhook as stored, `['url' => ..., 'events' => [...]]`.
     * The site checks each request with Webhook::verify().
     *
     * @param list<string> $events
     * @return array{url: string, events: list<string>}
     */
    public function setWebhook(string $url, array $events = Webhook::EVENTS): array
    {
        if (!array_is_list($events)) {
            throw new \InvalidArgumentException('the events are a list of event names');
        }
        $body = self::encode(['url' => $url, 'events' => $events]);

        return $this->request('PUT', '/api/v1/webhook', $body, 'application/json')[1];
    }

    /**
     * The webhook set, `['url' => ..., 'events' => [...]]`; null if none is.
     *
     * @return array{url: string, events: list<string>}|null
     */
    public function getWebhook(): ?array
    {
        try {
            return $this->request('GET', '/api/v1/webhook')[1];
        } catch (NotifierException $e) {
            if ($e->getStatus() === 404 && $e->getErrorCode() === 'no_webhook') {
                return null;
            }
            throw $e;
        }
    }

    /** Stop the webhook; nothing happens if none is set. */
    public function deleteWebhook(): void
    {
        $this->request('DELETE', '/api/v1/webhook');
    }

    /**
     * One request; its status and decoded JSON body (null when empty).
     *
     * @return array{0: int, 1: mixed}
     */
    private function request(
        string $method,
        string $path,
        ?string $body = null,
        ?string $contentType = null,
        ?string $idempotencyKey = null,
    ): array {
        $target = $this->prefix . $path;
        [$sent, $authorization] = $this->authorize($method, $target, $body ?? '');
        $headers = [
            "Authorization: {$authorization}",
            'Accept: application/json',
            'Expect:',   // no 100-continue round trip for large bodies
        ];
        if ($body !== null && $contentType !== null) {
            $headers[] = "Content-Type: {$contentType}";
        }
        if ($idempotencyKey !== null) {
            if ($idempotencyKey === '' || strlen($idempotencyKey) > 255 || preg_match('/[^\x20-\x7e]/', $idempotencyKey)) {
                throw new \InvalidArgumentException('an idempotency key is 1 to 255 printable ASCII characters');
            }
            $headers[] = "Idempotency-Key: {$idempotencyKey}";
        }

        $handle = $this->handle ??= curl_init();
        curl_reset($handle);
        $options = [
            \CURLOPT_URL => $this->origin . $sent,
            \CURLOPT_HTTPHEADER => $headers,
            \CURLOPT_RETURNTRANSFER => true,
            \CURLOPT_FOLLOWLOCATION => false,
            \CURLOPT_NOSIGNAL => true,
            \CURLOPT_CONNECTTIMEOUT_MS => (int) ceil($this->connectTimeout * 1000),
            \CURLOPT_TIMEOUT_MS => (int) ceil($this->timeout * 1000),
            \CURLOPT_USERAGENT => $this->userAgent,
            \CURLOPT_PROTOCOLS => \CURLPROTO_HTTP | \CURLPROTO_HTTPS,
        ];
        if ($method === 'GET') {
            $options[\CURLOPT_HTTPGET] = true;
        } else {
            $options[\CURLOPT_CUSTOMREQUEST] = $method;
            if ($body !== null) {
                $options[\CURLOPT_POSTFIELDS] = $body;
            }
        }
        curl_setopt_array($handle, $options);

        $answer = curl_exec($handle);
        if ($answer === false) {
            $errno = curl_errno($handle);
            $this->handle = null;   // a fresh connection next time
            throw new TransportException($this->transportMessage($errno, curl_error($handle)), $errno, $method, $target);
        }
        $status = (int) curl_getinfo($handle, \CURLINFO_RESPONSE_CODE);
        $type = (string) curl_getinfo($handle, \CURLINFO_CONTENT_TYPE);
        $decoded = null;
        $isJson = stripos($type, 'application/json') === 0;
        if ($isJson && $answer !== '') {
            try {
                $decoded = json_decode($answer, true, 512, \JSON_THROW_ON_ERROR);
            } catch (\JsonException) {
                $decoded = null;
                $isJson = false;
            }
        }

        if ($status >= 200 && $status < 300) {
            if ($status !== 204 && !is_array($decoded)) {
                throw new NotifierException($status, 'invalid_response', 'the answer is not the JSON expected', $method, $target);
            }
            return [$status, $decoded];
        }
        if (is_array($decoded) && isset($decoded['error']) && is_string($decoded['error'])) {
            $message = isset($decoded['message']) && is_string($decoded['message']) ? $decoded['message'] : $decoded['error'];
            throw new NotifierException($status, $decoded['error'], $message, $method, $target);
        }
        throw new NotifierException($status, 'http_error', "the server answered HTTP {$status}", $method, $target);
    }

    /**
     * The request target to send and its Authorization header value.
     *
     * Signing adds `nonce=<32 random hex digits>` to the target's query (it
     * is part of the signed target): the daemon refuses a POST's signature
     * it has accepted before, and two identical requests signed within the same
     * second would otherwise have the same one. Every call signs anew, with
     * a new nonce and timestamp, so a caller's retry is never a replay.
     * Basic credentials leave the target as it is.
     *
     * @return array{0: string, 1: string}
     */
    private function authorize(string $method, string $target, string $body): array
    {
        if ($this->auth === self::AUTH_BASIC) {
            return [$target, 'Basic ' . base64_encode("{$this->publisher}:{$this->secret}")];
        }
        $nonce = bin2hex(random_bytes(16));
        $target .= (str_contains($target, '?') ? '&' : '?') . "nonce={$nonce}";
        $timestamp = time();
        $signed = "{$method}\n{$target}\n{$timestamp}\n" . hash('sha256', $body);
        $signature = hash_hmac('sha256', $signed, $this->secret);

        return [
            $target,
            "Notifier-HMAC-SHA256 publisher={$this->publisher}, timestamp={$timestamp}, signature={$signature}",
        ];
    }

    private function transportMessage(int $errno, string $error): string
    {
        $where = $this->origin . $this->prefix;
        return match ($errno) {
            \CURLE_OPERATION_TIMEDOUT => "no answer from {$where} within the timeout ({$error})",
            \CURLE_COULDNT_CONNECT => "cannot connect to {$where}: is the daemon running? ({$error})",
            \CURLE_COULDNT_RESOLVE_HOST => "cannot resolve the host of {$where} ({$error})",
            default => "request to {$where} failed: {$error}",
        };
    }

    private static function centerPath(string $name): string
    {
        if ($name === '') {
            throw new \InvalidArgumentException('a center name is not empty');
        }
        return '/api/v1/centers/' . rawurlencode($name);
    }

    private static function encode(mixed $value): string
    {
        try {
            return json_encode($value, \JSON_UNESCAPED_SLASHES | \JSON_UNESCAPED_UNICODE | \JSON_THROW_ON_ERROR);
        } catch (\JsonException $e) {
            throw new \InvalidArgumentException('the body cannot be JSON-encoded: ' . $e->getMessage(), 0, $e);
        }
    }
}
