<?php

declare(strict_types=1);

namespace Notifier;

/**
 * The daemon could not be reached or did not answer in time: connection
 * refused, unknown host, TLS failure, timeout. getStatus() is 0 and
 * getErrorCode() is `timeout` or `transport_error`; getCurlErrno() tells
 * the precise cause (CURLE_* constants).
 *
 * A publish that failed this way may or may not have been delivered: retry
 * it with the same idempotency key to have it delivered exactly once.
 */
class TransportException extends NotifierException
{
    public function __construct(
        string $errorMessage,
        private readonly int $curlErrno = 0,
        string $method = '',
        string $target = '',
        ?\Throwable $previous = null,
    ) {
        $code = $curlErrno === \CURLE_OPERATION_TIMEDOUT ? 'timeout' : 'transport_error';
        parent::__construct(0, $code, $errorMessage, $method, $target, $previous);
    }

    public function getCurlErrno(): int
    {
        return $this->curlErrno;
    }

    public function isTimeout(): bool
    {
        return $this->curlErrno === \CURLE_OPERATION_TIMEDOUT;
    }
}
