<?php

declare(strict_types=1);

namespace Clusterkit;

use Clusterkit\Exception\BackendException;
use Clusterkit\Exception\ClusterkitException;

/** igbinary (the `igbinary` extension): smaller and faster than serialize() for arrays. */
final class IgbinarySerializer implements Serializer
{
    public function __construct()
    {
        if (!function_exists('igbinary_serialize')) {
            throw new ClusterkitException('IgbinarySerializer needs the igbinary extension');
        }
    }

    public function serialize(mixed $value): string
    {
        return igbinary_serialize($value);
    }

    public function unserialize(string $data): mixed
    {
        $v = @igbinary_unserialize($data);
        if ($v === null && $data !== igbinary_serialize(null)) {
            throw new BackendException('stored value is not an igbinary value (' . strlen($data) . ' bytes)');
        }
        return $v;
    }
}
