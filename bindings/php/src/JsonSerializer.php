<?php

declare(strict_types=1);

namespace Clusterkit;

use Clusterkit\Exception\BackendException;
use Clusterkit\Exception\InvalidArgumentException;

/**
 * JSON, readable by the other languages' bindings. Objects come back as associative arrays
 * (or stdClass with `$assoc` false); floats without a fraction come back as floats.
 */
final class JsonSerializer implements Serializer
{
    public function __construct(private readonly bool $assoc = true)
    {
    }

    public function serialize(mixed $value): string
    {
        try {
            return json_encode($value, JSON_THROW_ON_ERROR | JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE | JSON_PRESERVE_ZERO_FRACTION);
        } catch (\JsonException $e) {
            throw new InvalidArgumentException("invalid value: not encodable as JSON: {$e->getMessage()}", previous: $e);
        }
    }

    public function unserialize(string $data): mixed
    {
        try {
            return json_decode($data, $this->assoc, 512, JSON_THROW_ON_ERROR);
        } catch (\JsonException $e) {
            throw new BackendException("stored value is not JSON: {$e->getMessage()}", previous: $e);
        }
    }
}
