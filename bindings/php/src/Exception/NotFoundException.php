<?php

declare(strict_types=1);

namespace Clusterkit\Exception;

/**
 * CK_NOT_FOUND: the thing asked for does not exist (a pool, a node, a session).
 */
class NotFoundException extends ClusterkitException
{
    public function __construct(string $message = '', int $code = self::NOT_FOUND, ?\Throwable $previous = null)
    {
        parent::__construct($message, $code, $previous);
    }

    public function kind(): string
    {
        return 'not_found';
    }
}
