<?php

/*
 * Autoloader for using clusterkit without composer: require this file.
 *
 * Loads Clusterkit\ classes from src/ (PSR-4). PSR-16's interfaces come from wherever they
 * already are (composer, Debian's php-psr-simple-cache in /usr/share/php); only if none is
 * found are the copies in compat/ used (psr/simple-cache 1.0 shapes).
 */

declare(strict_types=1);

spl_autoload_register(static function (string $class): void {
    if (strncmp($class, 'Clusterkit\\', 11) !== 0) {
        return;
    }
    $file = __DIR__ . '/src/' . str_replace('\\', '/', substr($class, 11)) . '.php';
    if (is_file($file)) {
        require $file;
    }
});

if (!interface_exists(\Psr\SimpleCache\CacheInterface::class)) {
    // Debian/Ubuntu package php-psr-simple-cache (found through the include_path).
    if (stream_resolve_include_path('Psr/SimpleCache/autoload.php') !== false) {
        require_once 'Psr/SimpleCache/autoload.php';
    }
    // Last resort, appended after every other autoloader.
    spl_autoload_register(static function (string $class): void {
        if (strncmp($class, 'Psr\\SimpleCache\\', 16) !== 0) {
            return;
        }
        $file = __DIR__ . '/compat/Psr/SimpleCache/' . substr($class, 16) . '.php';
        if (is_file($file)) {
            require $file;
        }
    });
}

// PSR-3 (Clusterkit\LogBridge): Debian's php-psr-log when no autoloader provides it.
if (!interface_exists(\Psr\Log\LoggerInterface::class) && stream_resolve_include_path('Psr/Log/autoload.php') !== false) {
    require_once 'Psr/Log/autoload.php';
}
