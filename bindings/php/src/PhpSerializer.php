<?php

declare(strict_types=1);

namespace Clusterkit;

use Clusterkit\Exception\BackendException;

/**
 * PHP's own serialize()/unserialize(): every PHP value, objects included (the default).
 * `$allowedClasses` is passed to unserialize() (true: any class; a list: only those; false:
 * none — objects come back as __PHP_Incomplete_Class).
 */
final class PhpSerializer implements Serializer
{
    private readonly array $options;

    public function __construct(bool|array $allowedClasses = true)
    {
        $this->options = ['allowed_classes' => $allowedClasses];
    }

    public function serialize(mixed $value): string
    {
        return serialize($value);
    }

    public function unserialize(string $data): mixed
    {
        $v = @unserialize($data, $this->options);
        if ($v === false && $data !== 'b:0;') {
            throw new BackendException('stored value is not a PHP-serialized value (' . strlen($data) . ' bytes)');
        }
        return $v;
    }
}
