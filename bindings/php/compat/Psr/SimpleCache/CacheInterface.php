<?php

// PSR-16 (https://www.php-fig.org/psr/psr-16/, MIT, PHP-FIG): used only when no
// psr/simple-cache package is installed (see autoload.php).

namespace Psr\SimpleCache;

interface CacheInterface
{
    /** Fetches a value from the cache, or $default. */
    public function get($key, $default = null);

    /** Persists data under $key with an optional TTL (null, int seconds or DateInterval). */
    public function set($key, $value, $ttl = null);

    /** Deletes an item by its key. */
    public function delete($key);

    /** Wipes clean the entire cache's keys. */
    public function clear();

    /** Obtains multiple items: key => value, $default for missing ones. */
    public function getMultiple($keys, $default = null);

    /** Persists a set of key => value pairs. */
    public function setMultiple($values, $ttl = null);

    /** Deletes multiple items. */
    public function deleteMultiple($keys);

    /** Whether an item is present. */
    public function has($key);
}
