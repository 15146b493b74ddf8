<?php

declare(strict_types=1);

namespace Clusterkit;

/**
 * Turns PHP values into the bytes stored in the cache and in sessions, and back.
 *
 * Integers never reach a serializer in DistributedCache: they are stored as plain decimal
 * text (so increment() works on them and other languages read them), and stored decimal text
 * is read back as an int before the serializer is asked.
 */
interface Serializer
{
    /** @throws \Throwable when the value cannot be serialized */
    public function serialize(mixed $value): string;

    /** @throws Exception\ClusterkitException when the bytes are not a serialized value */
    public function unserialize(string $data): mixed;
}
