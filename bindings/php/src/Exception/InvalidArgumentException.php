<?php

declare(strict_types=1);

namespace Clusterkit\Exception;

/**
 * CK_INVALID_ARGUMENT: a bad key, id, TTL or config value; the message names the field.
 * Also PSR-16's InvalidArgumentException (illegal cache keys and TTLs).
 */
class InvalidArgumentException extends ClusterkitException implements \Psr\SimpleCache\InvalidArgumentException
{
    public function __construct(string $message = '', int $code = self::INVALID_ARGUMENT, ?\Throwable $previous = null)
    {
        parent::__construct($message, $code, $previous);
    }

    public function kind(): string
    {
        return 'invalid_argument';
    }
}
