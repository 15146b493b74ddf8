<?php

declare(strict_types=1);

namespace Clusterkit\Exception;

/**
 * CK_CLOSED: a handle was used after it was closed (a released lock).
 */
class ClosedException extends ClusterkitException
{
    public function __construct(string $message = '', int $code = self::CLOSED, ?\Throwable $previous = null)
    {
        parent::__construct($message, $code, $previous);
    }

    public function kind(): string
    {
        return 'closed';
    }
}
