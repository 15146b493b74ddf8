<?php

declare(strict_types=1);

namespace Clusterkit\Exception;

/**
 * CK_UNAVAILABLE: no healthy node, no quorum, or the backend is down.
 */
class UnavailableException extends ClusterkitException
{
    public function __construct(string $message = '', int $code = self::UNAVAILABLE, ?\Throwable $previous = null)
    {
        parent::__construct($message, $code, $previous);
    }

    public function kind(): string
    {
        return 'unavailable';
    }
}
