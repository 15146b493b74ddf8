<?php

// PSR-16 (https://www.php-fig.org/psr/psr-16/, MIT, PHP-FIG): used only when no
// psr/simple-cache package is installed (see autoload.php).

namespace Psr\SimpleCache;

/** Exception interface for invalid cache arguments (thrown when a key or TTL is not legal). */
interface InvalidArgumentException extends CacheException
{
}
