<?php

declare(strict_types=1);

namespace Clusterkit\Exception;

/**
 * Base of every exception clusterkit throws. The message is the library's own
 * (ck_last_error()), which names the argument or config field at fault.
 *
 * It implements PSR-16's CacheException so that everything DistributedCache throws is one.
 * {@see ClusterkitException::status()} gives the C status code (0 for errors raised in PHP).
 */
class ClusterkitException extends \RuntimeException implements \Psr\SimpleCache\CacheException
{
    /** ck_status codes (include/clusterkit.h). */
    public const OK = 0;
    public const NOT_FOUND = 1;
    public const INVALID_ARGUMENT = 2;
    public const TIMEOUT = 3;
    public const UNAVAILABLE = 4;
    public const CONFLICT = 5;
    public const CLOSED = 6;
    public const BACKEND = 7;
    public const INTERNAL = 8;

    /** @var array<int, class-string<ClusterkitException>> */
    private const CLASSES = [
        self::NOT_FOUND => NotFoundException::class,
        self::INVALID_ARGUMENT => InvalidArgumentException::class,
        self::TIMEOUT => TimeoutException::class,
        self::UNAVAILABLE => UnavailableException::class,
        self::CONFLICT => ConflictException::class,
        self::CLOSED => ClosedException::class,
        self::BACKEND => BackendException::class,
        self::INTERNAL => InternalException::class,
    ];

    /** The exception for a ck_status (an unknown code is an InternalException). */
    public static function fromStatus(int $status, string $message): self
    {
        $class = self::CLASSES[$status] ?? InternalException::class;
        if ($message === '') {
            $message = "clusterkit call failed with status $status";
        }
        return new $class($message, $status);
    }

    /** The ck_status code (also getCode()); 0 for errors raised in PHP (e.g. loading the library). */
    public function status(): int
    {
        return $this->getCode();
    }

    /** The error kind's name shared by every language: "not_found", "timeout", ... */
    public function kind(): string
    {
        return 'error';
    }
}
