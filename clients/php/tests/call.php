<?php

declare(strict_types=1);

/*
 * Runs client calls described by a JSON file and prints their outcomes as
 * JSON, for tests/test_php_client.py:
 *
 *     php call.php program.json
 *
 * program.json: {"url": ..., "publisher": ..., "secret": ..., "options": {...},
 *                "calls": [["publish", "news", "hello"], ...]}
 * A call is a Client method and its arguments, or ["token", secret, centers,
 * ttl, now] for SubscriberToken::create. Each outcome is {"result": ...} or
 * {"exception": {"class", "status", "error", "message", "error_message", "timeout"}}.
 */

require __DIR__ . '/../autoload.php';

use Notifier\Client;
use Notifier\NotifierException;
use Notifier\SubscriberToken;
use Notifier\TransportException;

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
        $result = $method === 'token'
            ? SubscriberToken::create(...$call)
            : $client->{$method}(...$call);
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
