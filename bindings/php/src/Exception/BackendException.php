<?php

declare(strict_types=1);

namespace Clusterkit\Exception;

/**
 * CK_BACKEND: the backend server answered with an error.
 */
class BackendException extends ClusterkitException
{
    public function __construct(string $message = '', int $code = self::BACKEND, ?\Throwable $previous = null)
    {
        parent::__construct($message, $code, $previous);
    }

    public function kind(): string
    {
        return 'backend';
    }
}
