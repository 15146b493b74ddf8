<?php

declare(strict_types=1);

namespace Clusterkit\Exception;

/**
 * CK_TIMEOUT: an operation did not finish within its deadline (a lock wait, a backend call).
 */
class TimeoutException extends ClusterkitException
{
    public function __construct(string $message = '', int $code = self::TIMEOUT, ?\Throwable $previous = null)
    {
        parent::__construct($message, $code, $previous);
    }

    public function kind(): string
    {
        return 'timeout';
    }
}
