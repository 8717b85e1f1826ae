<?php

declare(strict_types=1);

namespace Notifier;

/**
 * A refusal by the notifier daemon, or (as TransportException) no answer at all.
 *
 * For an HTTP refusal, getStatus() is the HTTP status (also getCode()),
 * getErrorCode() the machine code of the daemon's JSON error body
 * (`bad_credentials`, `no_such_center`, `too_large`, ...) and
 * getErrorMessage() its human sentence. getMessage() puts them together with
 * the request that failed. No message ever holds the publisher's secret.
 */
class NotifierException extends \RuntimeException
{
    public function __construct(
        private readonly int $status,
        private readonly string $errorCode,
        private readonly string $errorMessage,
        private readonly string $method = '',
        private readonly string $target = '',
        ?\Throwable $previous = null,
    ) {
        $request = $method !== '' ? " ({$method} {$target})" : '';
        $what = $status > 0 ? "{$status} {$errorCode}" : $errorCode;
        parent::__construct("notifier: {$what}: {$errorMessage}{$request}", $status, $previous);
    }

    /** The HTTP status of the answer; 0 when there was none (TransportException). */
    public function getStatus(): int
    {
        return $this->status;
    }

    /** The daemon's machine-readable error code, e.g. `no_such_center`. */
    public function getErrorCode(): string
    {
        return $this->errorCode;
    }

    /** The daemon's human-readable sentence, without the request added. */
    public function getErrorMessage(): string
    {
        return $this->errorMessage;
    }

    /** The HTTP method of the failed request. */
    public function getMethod(): string
    {
        return $this->method;
    }

    /**
     * The request target (path and query) of the failed request, without
     * the `nonce` query parameter that signing adds.
     */
    public function getTarget(): string
    {
        return $this->target;
    }
}
