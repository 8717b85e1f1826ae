<?php

declare(strict_types=1);

namespace Notifier;

/**
 * The site's side of notifier's webhooks: checking that a request to its
 * webhook route comes from notifier, unaltered and recent.
 *
 *     $payload = Webhook::verify($secret, getallheaders(), file_get_contents('php://input'));
 *     foreach ($payload['events'] as $event) { ... $event['name'], $event['center'] ... }
 *
 * notifier POSTs `{"events": [{"name", "center", "ts", ...}, ...]}` with
 * `Notifier-Signature: t=<unix seconds>,v1=<hex>`, where v1 is
 * hash_hmac('sha256', "{t}.{body}", $secret), and `Notifier-Webhook-Id`,
 * the same on every retry of one request (Webhook::id()): a site that has
 * handled an id answers its retries 2xx and does nothing more.
 */
final class Webhook
{
    public const CENTER_OCCUPIED = 'center_occupied';
    public const CENTER_VACATED = 'center_vacated';
    public const MEMBER_JOINED = 'member_joined';
    public const MEMBER_LEFT = 'member_left';
    /** Every event, Client::setWebhook()'s default. */
    public const EVENTS = [self::CENTER_OCCUPIED, self::CENTER_VACATED, self::MEMBER_JOINED, self::MEMBER_LEFT];

    public const SIGNATURE_HEADER = 'Notifier-Signature';
    public const ID_HEADER = 'Notifier-Webhook-Id';
    /** Seconds a signature's `t` may be away from the clock, by default. */
    public const TOLERANCE = 300;

    /**
     * The decoded body of a request notifier signed with $secret: an array
     * with `events`, each `['name' => ..., 'center' => ..., 'ts' => ...]`
     * and, for members, `uid` (and `info` on a join).
     *
     * $headers are the request's, names in any case, each value a string or
     * a list of strings: getallheaders(), Symfony's $request->headers->all(),
     * PSR-7's getHeaders(), or $_SERVER (`HTTP_NOTIFIER_SIGNATURE`). $body
     * is the raw body, exactly as received. A `t` more than $tolerance
     * seconds away from $now (default: time()) is refused, so that a
     * captured request cannot be replayed later.
     *
     * @param array<string, string|list<string>> $headers
     * @return array{events: list<array<string, mixed>>}
     * @throws WebhookException the request is not one notifier signed with $secret, recently
     */
    public static function verify(
        #[\SensitiveParameter] string $secret,
        array $headers,
        string $body,
        int $tolerance = self::TOLERANCE,
        ?int $now = null,
    ): array {
        if ($secret === '') {
            throw new \InvalidArgumentException('the secret is empty');
        }
        if ($tolerance < 0) {
            throw new \InvalidArgumentException('the tolerance is a number of seconds, 0 or more');
        }
        $header = self::header($headers, self::SIGNATURE_HEADER);
        if ($header === null) {
            throw new WebhookException(401, 'missing_signature', 'the request has no ' . self::SIGNATURE_HEADER . ' header');
        }

        $timestamps = [];
        $signatures = [];
        foreach (explode(',', $header) as $part) {
            [$key, $value] = array_pad(explode('=', trim($part), 2), 2, null);
            if ($key === 't') {
                $timestamps[] = $value;
            } elseif ($key === 'v1' && $value !== null && $value !== '') {
                $signatures[] = $value;
            }
            // Other parts (later schemes) are not this version's business.
        }
        if (count($timestamps) !== 1 || !preg_match('/^[0-9]{1,18}$/D', (string) $timestamps[0]) || $signatures === []) {
            throw new WebhookException(401, 'malformed_signature', 'the ' . self::SIGNATURE_HEADER
                . ' header is not t=<unix seconds>,v1=<hex>');
        }
        $timestamp = $timestamps[0];

        $expected = hash_hmac('sha256', "{$timestamp}.{$body}", $secret);
        $matched = false;
        foreach ($signatures as $signature) {
            $matched = hash_equals($expected, $signature) || $matched;
        }
        if (!$matched) {
            throw new WebhookException(401, 'bad_signature', 'the signature does not match the body'
                . ' (another secret, or an altered body)');
        }
        $now ??= time();
        if (abs($now - (int) $timestamp) > $tolerance) {
            throw new WebhookException(401, 'stale_signature', "the signature's time, {$timestamp},"
                . " is more than {$tolerance} s away from this clock's, {$now} (a replay, or an unsynchronised clock)");
        }

        try {
            $payload = json_decode($body, true, 512, \JSON_THROW_ON_ERROR);
        } catch (\JsonException $e) {
            throw new WebhookException(400, 'invalid_body', 'the body is not JSON: ' . $e->getMessage(), $e);
        }
        if (!is_array($payload) || !isset($payload['events']) || !is_array($payload['events'])
            || !array_is_list($payload['events'])) {
            throw new WebhookException(400, 'invalid_body', 'the body is not {"events": [...]}');
        }
        return $payload;
    }

    /**
     * The request's `Notifier-Webhook-Id`, the same on each of its retries;
     * null if it has none. Take it from a verified request only.
     *
     * @param array<string, string|list<string>> $headers as for verify()
     */
    public static function id(array $headers): ?string
    {
        return self::header($headers, self::ID_HEADER);
    }

    /**
     * The `Notifier-Signature` value notifier would send with $body at
     * $timestamp (default: now), for a site's own tests of its route.
     */
    public static function sign(#[\SensitiveParameter] string $secret, string $body, ?int $timestamp = null): string
    {
        $timestamp ??= time();
        return "t={$timestamp},v1=" . hash_hmac('sha256', "{$timestamp}.{$body}", $secret);
    }

    /**
     * The value of the header $name among $headers, names compared without
     * regard to case, `-` or `_`, or an `HTTP_` prefix ($_SERVER); several
     * values joined with `,`. Null if absent or empty.
     *
     * @param array<mixed> $headers
     */
    private static function header(array $headers, string $name): ?string
    {
        $wanted = strtolower($name);
        $values = [];
        foreach ($headers as $key => $value) {
            $key = strtolower(strtr((string) $key, '_', '-'));
            if ($key !== $wanted && $key !== "http-{$wanted}") {
                continue;
            }
            foreach (is_array($value) ? $value : [$value] as $one) {
                if (is_string($one) && trim($one) !== '') {
                    $values[] = trim($one);
                }
            }
        }
        return $values === [] ? null : implode(',', $values);
    }
}
