<?php

declare(strict_types=1);

/*
 * A site's webhook route, for PHP's built-in web server, as
 * tests/test_php_presence_webhooks.py runs it:
 *
 *     NOTIFIER_WEBHOOK_DIR=/tmp/x php -S 127.0.0.1:8000 webhook_receiver.php
 *
 * Each POST is checked with Notifier\Webhook::verify() against the secret in
 * $NOTIFIER_WEBHOOK_DIR/secret (read on each request, so that a test can
 * change it), answered 204 or with the refusal's status, and appended to
 * $NOTIFIER_WEBHOOK_DIR/requests.jsonl as {"id", "signature", "body" (base64),
 * "status", "error", "events"}.
 */

require __DIR__ . '/../autoload.php';

use Notifier\Webhook;
use Notifier\WebhookException;

$dir = getenv('NOTIFIER_WEBHOOK_DIR');
if ($_SERVER['REQUEST_METHOD'] !== 'POST') {
    http_response_code(405);
    header('Allow: POST');
    return true;
}

$headers = getallheaders();
$body = file_get_contents('php://input');
$record = [
    'id' => Webhook::id($headers),
    'signature' => $headers['Notifier-Signature'] ?? null,
    'body' => base64_encode($body),
    'status' => 204,
    'error' => null,
    'events' => null,
];
try {
    $payload = Webhook::verify(trim(file_get_contents("{$dir}/secret")), $headers, $body);
    $record['events'] = $payload['events'];
    http_response_code(204);
} catch (WebhookException $e) {
    $record['status'] = $e->getStatus();
    $record['error'] = $e->getErrorCode();
    http_response_code($e->getStatus());
    header('Content-Type: application/json');
    echo json_encode(['error' => $e->getErrorCode(), 'message' => $e->getErrorMessage()]);
}
file_put_contents("{$dir}/requests.jsonl", json_encode($record, JSON_UNESCAPED_SLASHES | JSON_THROW_ON_ERROR) . "\n",
    FILE_APPEND | LOCK_EX);
return true;
