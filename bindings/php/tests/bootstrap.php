<?php

declare(strict_types=1);

// Test bootstrap: the package without composer (autoload.php), Debian's PSR-16 interfaces and
// php-cache/integration-tests (both in /usr/share/php, on PHP's include_path), the helpers.

error_reporting(E_ALL);
require dirname(__DIR__) . '/autoload.php';
require_once 'Psr/SimpleCache/autoload.php';
require_once 'Cache/IntegrationTests/autoload.php';

spl_autoload_register(static function (string $class): void {
    if (strncmp($class, 'Clusterkit\\Tests\\', 17) === 0) {
        $file = __DIR__ . '/' . str_replace('\\', '/', substr($class, 17)) . '.php';
        if (is_file($file)) {
            require $file;
        }
    }
});

if (getenv('CLUSTERKIT_LIB') === false || getenv('CLUSTERKIT_LIB') === '') {
    fwrite(STDERR, "CLUSTERKIT_LIB is not set: run the tests with bindings/php/run-tests\n");
    exit(1);
}
