<?php

/*
 * opcache.preload script for PHP-FPM (and any SAPI other than the CLI) when FFI stays at PHP's
 * default `ffi.enable=preload`. In that mode PHP allows the FFI API only to code that was
 * preloaded, so clusterkit's classes are preloaded here, and the library's FFI scope
 * "clusterkit" is declared once for the whole server:
 *
 *   ; PHP-FPM's php.ini (not a pool: these act when the master starts)
 *   ffi.enable = preload
 *   ffi.preload = /etc/php/8.2/clusterkit.h       ; php bin/clusterkit-ffi-header LIB > that file
 *   opcache.enable = 1
 *   opcache.preload = /path/to/clusterkit/preload.php
 *   opcache.preload_user = www-data               ; required when the FPM master runs as root
 *
 * `ffi.preload` is what declares the scope when the master runs as root (PHP refuses FFI::load
 * together with opcache.preload_user). Without it this script declares the scope itself with
 * FFI::load of a generated header (library: CLUSTERKIT_LIB of the preloading process, else
 * libclusterkit.so.1 through the dynamic linker; the header is written to the system temp
 * directory or CLUSTERKIT_PRELOAD_DIR).
 *
 * The simpler alternative is `ffi.enable = 1` (any script may then use FFI), with no preloading
 * at all: Clusterkit\Library then loads the library with FFI::cdef in each request.
 */

declare(strict_types=1);

// Composer's autoloader when installed as vendor/clusterkit/clusterkit (for psr/simple-cache),
// then the package's own.
if (is_file(__DIR__ . '/../../autoload.php')) {
    require_once __DIR__ . '/../../autoload.php';
}
require_once __DIR__ . '/autoload.php';

(static function (): void {
    try {
        \FFI::scope(\Clusterkit\Library::SCOPE); // declared by ffi.preload
    } catch (\FFI\Exception) {
        // PHP refuses FFI::load when opcache.preload_user makes it preload in a child (a
        // master running as root): ffi.preload is the way then.
        $hint = ' (when preloading with opcache.preload_user, e.g. in a PHP-FPM master running as root,'
            . ' set ffi.preload to a header made by ' . __DIR__ . '/bin/clusterkit-ffi-header instead)';
        $lib = getenv('CLUSTERKIT_LIB');
        $header = \Clusterkit\Library::preloadHeader($lib === false || $lib === '' ? null : $lib);
        $dirEnv = getenv('CLUSTERKIT_PRELOAD_DIR');
        $dir = $dirEnv !== false && $dirEnv !== '' ? $dirEnv : sys_get_temp_dir();
        $file = $dir . '/clusterkit-ffi-' . substr(hash('sha256', $header), 0, 16) . '.h';
        if (!is_file($file) || file_get_contents($file) !== $header) {
            $tmp = $file . '.' . getmypid() . '.tmp';
            if (file_put_contents($tmp, $header) === false || !rename($tmp, $file)) {
                throw new \RuntimeException("clusterkit preload: cannot write $file$hint");
            }
        }
        try {
            $loaded = \FFI::load($file);
        } catch (\FFI\Exception $e) {
            throw new \RuntimeException("clusterkit preload: FFI::load($file): {$e->getMessage()}$hint", 0, $e);
        }
        if ($loaded === null) {
            throw new \RuntimeException("clusterkit preload: FFI::load($file) failed (is the library at the FFI_LIB path?)");
        }
    }
    // Preload every class (interfaces and enums included): their methods may then use FFI.
    $src = __DIR__ . '/src/';
    $files = array_merge(glob($src . '*.php') ?: [], glob($src . 'Exception/*.php') ?: []);
    foreach ($files as $php) {
        $class = 'Clusterkit\\' . str_replace(['/', '.php'], ['\\', ''], substr($php, strlen($src)));
        if (!class_exists($class) && !interface_exists($class) && !enum_exists($class)) {
            throw new \RuntimeException("clusterkit preload: $php does not declare $class");
        }
    }
})();
