<?php

declare(strict_types=1);

/*
 * Runs client calls described by a JSON file and prints their outcomes as
 * JSON, for tests/test_php_client.py and tests/test_php_presence_webhooks.py:
 *
 *     php call.php program.json
 *
 * program.json: {"url": ..., "publisher": ..., "secret": ..., "options": {...},
 *                "calls": [["publish", "news", "hello"], ...]}
 * A call is a Client method and its arguments, or one of the static calls
 * ["token", secret, centers, ttl, now, uid, info] (SubscriberToken::create),
 * ["verify", secret, headers, body, tolerance, now] (Webhook::verify),
 * ["webhookId", headers] (Webhook::id) and ["sign", secret, body, timestamp]
 * (Webhook::sign). Each outcome is {"result": ...} or
 * {"exception": {"class", "status", "error", "message", "error_message", "timeout"}}.
 */

require __DIR__ . '/../autoload.php';

use Notifier\Client;
use Notifier\NotifierException;
use Notifier\SubscriberToken;
use Notifier\TransportException;
use Notifier\Webhook;

$program = json_decode(file_get_contents($argv[1]), true, 512, JSON_THROW_ON_ERROR);
$options = $program['options'] ?? [];
$outcomes = [];

try {
    $client = new Client($program['url'], $program['publisher'], $program['secret'], $options);
} catch (\InvalidArgumentException $e) {
    $client = null;
    $outcomes[] = ['exception' => ['class' => get_class($e), 'message' => $e->getMessage()]];
}

foreach ($client === null ? [] : $program['calls'] as $call) {
    $method = array_shift($call);
    try {
        $result = match ($method) {
            'token' => SubscriberToken::create(...$call),
            'verify' => Webhook::verify(...$call),
            'webhookId' => Webhook::id(...$call),
            'sign' => Webhook::sign(...$call),
            default => $client->{$method}(...$call),
        };
        $outcomes[] = ['result' => $result];
    } catch (NotifierException $e) {
        $outcomes[] = ['exception' => [
            'class' => get_class($e),
            'status' => $e->getStatus(),
            'code' => $e->getCode(),
            'error' => $e->getErrorCode(),
            'error_message' => $e->getErrorMessage(),
            'message' => $e->getMessage(),
            'timeout' => $e instanceof TransportException && $e->isTimeout(),
        ]];
    } catch (\InvalidArgumentException $e) {
        $outcomes[] = ['exception' => ['class' => get_class($e), 'message' => $e->getMessage()]];
    }
}

ob_start();
var_dump($client);
$debug = print_r($client, true) . ob_get_clean();   // what a log of the client would show
echo json_encode(['outcomes' => $outcomes, 'debug' => $debug], JSON_UNESCAPED_SLASHES | JSON_THROW_ON_ERROR), "\n";
