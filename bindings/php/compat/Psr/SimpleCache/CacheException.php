<?php

// PSR-16 (https://www.php-fig.org/psr/psr-16/, MIT, PHP-FIG): used only when no
// psr/simple-cache package is installed (see autoload.php).

namespace Psr\SimpleCache;

/** Interface used for all types of exceptions thrown by the implementing library. */
interface CacheException
{
}
