<?php

declare(strict_types=1);

namespace Notifier;

/**
 * A request to the site's webhook route that Webhook::verify() refused.
 *
 * getStatus() (also getCode()) is the HTTP status to answer it with: 401
 * when the signature is missing, malformed, wrong or stale, 400 when the
 * signed body is not a notifier webhook body. getErrorCode() tells which:
 *
 * - `missing_signature`: no `Notifier-Signature` header;
 * - `malformed_signature`: no `t=<unix seconds>` or no `v1=<hex>` in it;
 * - `bad_signature`: no `v1` matches (another secret, or an altered body);
 * - `stale_signature`: `t` is further from the clock than the tolerance
 *   (a replayed request, or a clock out of sync);
 * - `invalid_body`: the body is not a JSON object with a list of `events`.
 *
 * A refused request is answered with a non-2xx status: notifier sends it
 * again later, with the same `Notifier-Webhook-Id`. No message holds the
 * secret.
 */
class WebhookException extends NotifierException
{
    public function __construct(int $status, string $errorCode, string $errorMessage, ?\Throwable $previous = null)
    {
        parent::__construct($status, $errorCode, $errorMessage, '', '', $previous);
        // Not an answer of the daemon: a request to the site, refused.
        $this->message = "notifier webhook refused: {$errorCode}: {$errorMessage}";
    }
}
