<?php

declare(strict_types=1);

namespace Notifier;

/**
 * Subscriber tokens for private centers: JWTs signed HS256 with the
 * publisher's secret, made with hash_hmac alone.
 *
 * Minting needs no network, so a page can embed a token without talking to
 * the daemon: SubscriberToken::create($secret, 'user.17.inbox'). A token
 * for a presence center also names who holds it:
 * SubscriberToken::create($secret, 'node.5.editors', uid: '17', info: ['name' => 'Ann']).
 */
final class SubscriberToken
{
    /** The longest `uid`, in characters. */
    public const MAX_UID = 128;
    /** The largest `info`, in bytes of JSON as the daemon writes it. */
    public const MAX_INFO_BYTES = 1024;

    /**
     * A token granting the center named $centers (claim `sub`), or every
     * center of a list (claim `centers`; a name ending in `*` grants every
     * center starting with what precedes it), for $ttlSeconds from $now.
     *
     * $uid (1 to 128 characters) is who the holder is in a presence center,
     * which refuses a token without one; $info (an associative array, at
     * most 1 KiB as JSON) is what the other members are told about them.
     * Both are shown to every member of the presence centers the token
     * opens: put nothing secret there.
     *
     * @param string|list<string> $centers bare center names, without the publisher
     * @param array<string, mixed>|null $info
     */
    public static function create(
        #[\SensitiveParameter] string $secret,
        string|array $centers,
        int $ttlSeconds = 3600,
        ?int $now = null,
        ?string $uid = null,
        ?array $info = null,
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
        if ($uid !== null) {
            self::checkUid($uid);
            $claims['uid'] = $uid;
        }
        if ($info !== null) {
            if ($uid === null) {
                throw new \InvalidArgumentException('info describes a member: it needs a uid');
            }
            $claims['info'] = self::checkInfo($info);
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

    private static function checkUid(string $uid): void
    {
        // Characters (code points) as the daemon counts them; false for invalid UTF-8.
        $length = preg_match_all('/./su', $uid);
        if ($length === false || $length < 1 || $length > self::MAX_UID) {
            throw new \InvalidArgumentException('a uid is 1 to ' . self::MAX_UID . ' characters of UTF-8 text');
        }
    }

    /**
     * $info as the JSON object it becomes, if the daemon will take it.
     *
     * @param array<mixed> $info
     */
    private static function checkInfo(array $info): object
    {
        if ($info !== [] && array_is_list($info)) {
            throw new \InvalidArgumentException('info is an associative array (a JSON object), not a list');
        }
        $object = (object) $info;
        if (self::daemonBytes(self::json($object)) > self::MAX_INFO_BYTES) {
            throw new \InvalidArgumentException('info is at most ' . self::MAX_INFO_BYTES . ' bytes as JSON');
        }
        return $object;
    }

    /**
     * The size of $json once the daemon writes it again to measure it: the
     * same text with a space after each `,` and `:` between values.
     */
    private static function daemonBytes(string $json): int
    {
        $separators = 0;
        $inString = false;
        $escaped = false;
        for ($i = 0, $n = strlen($json); $i < $n; $i++) {
            $char = $json[$i];
            if ($inString) {
                if ($escaped) {
                    $escaped = false;
                } elseif ($char === '\\') {
                    $escaped = true;
                } elseif ($char === '"') {
                    $inString = false;
                }
            } elseif ($char === '"') {
                $inString = true;
            } elseif ($char === ',' || $char === ':') {
                $separators++;
            }
        }
        return strlen($json) + $separators;
    }

    /** @param array<string, mixed>|object $value */
    private static function json(array|object $value): string
    {
        try {
            return json_encode($value, \JSON_UNESCAPED_SLASHES | \JSON_UNESCAPED_UNICODE | \JSON_THROW_ON_ERROR);
        } catch (\JsonException $e) {
            throw new \InvalidArgumentException('center names, the uid and the info must be UTF-8 text, and the info JSON-encodable', 0, $e);
        }
    }
}
