<?php

declare(strict_types=1);

namespace Clusterkit\Exception;

/**
 * CK_INTERNAL: a bug in clusterkit, including a panic caught at the C boundary.
 */
class InternalException extends ClusterkitException
{
    public function __construct(string $message = '', int $code = self::INTERNAL, ?\Throwable $previous = null)
    {
        parent::__construct($message, $code, $previous);
    }

    public function kind(): string
    {
        return 'internal';
    }
}
