<?php

declare(strict_types=1);

namespace Clusterkit\Exception;

/**
 * CK_CONFLICT: someone else holds the lock, the lock was lost, a node id is taken.
 */
class ConflictException extends ClusterkitException
{
    public function __construct(string $message = '', int $code = self::CONFLICT, ?\Throwable $previous = null)
    {
        parent::__construct($message, $code, $previous);
    }

    public function kind(): string
    {
        return 'conflict';
    }
}
