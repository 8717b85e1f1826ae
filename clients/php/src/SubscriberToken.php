<?php

declare(strict_types=1);

namespace Notifier;

/**
 * Subscriber tokens for private centers: JWTs signed HS256 with the
 * publisher's secret, made with hash_hmac alone.
 *
 * Minting needs no network, so a page can embed a token without talking to
 * the daemon: SubscriberToken::create($secret, 'user.17.inbox').
 */
final class SubscriberToken
{
    /**
     * A token granting the center named $centers (claim `sub`), or every
     * center of a list (claim `centers`; a name ending in `*` grants every
     * center starting with what precedes it), for $ttlSeconds from $now.
     *
     * @param string|list<string> $centers bare center names, without the publisher
     */
    public static function create(
        #[\SensitiveParameter] string $secret,
        string|array $centers,
        int $ttlSeconds = 3600,
        ?int $now = null,
    ): string {
        if ($secret === '') {
            throw new \InvalidArgumentException('the secret is empty');
        }
        if ($ttlSeconds < 1) {
            throw new \InvalidArgumentException('a subscriber token lives at least one second');
        }
        $now ??= time();
        $claims = [];
        if (is_string($centers)) {
            self::checkName($centers);
            $claims['sub'] = $centers;
        } else {
            if ($centers === []) {
                throw new \InvalidArgumentException('a subscriber token grants at least one center');
            }
            foreach ($centers as $center) {
                if (!is_string($center)) {
                    throw new \InvalidArgumentException('center names are strings');
                }
                self::checkName($center);
            }
            $claims['centers'] = array_values($centers);
        }
        $claims['iat'] = $now;
        $claims['exp'] = $now + $ttlSeconds;

        $header = self::base64url(self::json(['alg' => 'HS256', 'typ' => 'JWT']));
        $payload = self::base64url(self::json($claims));
        $signature = hash_hmac('sha256', "{$header}.{$payload}", $secret, true);

        return "{$header}.{$payload}." . self::base64url($signature);
    }

    public static function base64url(string $bytes): string
    {
        return rtrim(strtr(base64_encode($bytes), '+/', '-_'), '=');
    }

    private static function checkName(string $center): void
    {
        if ($center === '') {
            throw new \InvalidArgumentException('a center name is not empty');
        }
    }

    /** @param array<string, mixed> $value */
    private static function json(array $value): string
    {
        try {
            return json_encode($value, \JSON_UNESCAPED_SLASHES | \JSON_UNESCAPED_UNICODE | \JSON_THROW_ON_ERROR);
        } catch (\JsonException $e) {
            throw new \InvalidArgumentException('center names must be UTF-8 text', 0, $e);
        }
    }
}
