<?php

declare(strict_types=1);

namespace Clusterkit;

use Clusterkit\Exception\ClusterkitException;
use FFI;

/**
 * The loaded C library: one FFI object shared by every clusterkit object of the process.
 *
 * Where it comes from, in order:
 *  1. the FFI scope "clusterkit" when it was preloaded (PHP-FPM: `ffi.preload` of a header
 *     made by bin/clusterkit-ffi-header, or preload.php), when no explicit path is given;
 *  2. FFI::cdef() with the header shipped in resources/clusterkit.h and the library path
 *     given to {@see Library::load()}, else the CLUSTERKIT_LIB environment variable (an
 *     absolute path of the .so), else `libclusterkit.so.1` through the dynamic linker.
 *
 * The library's ABI major version must equal {@see Library::ABI_MAJOR} (and its minor be at
 * least the header's); any other library is refused with a ClusterkitException.
 */
final class Library
{
    /** The ABI major version these bindings speak (the soname's number). */
    public const ABI_MAJOR = 1;

    /** The FFI scope name used by preload.php (`#define FFI_SCOPE "clusterkit"`). */
    public const SCOPE = 'clusterkit';

    /** The library name used when neither a path nor CLUSTERKIT_LIB is given. */
    public const DEFAULT_LIB = 'libclusterkit.so.1';

    /** @var array<string, Library> loaded libraries by path ('' = the default) */
    private static array $loaded = [];

    /** The FFI object through which every ck_ function is called. */
    public readonly FFI $ffi;

    /** Where the library came from: a path, or "scope:clusterkit". */
    public readonly string $origin;

    /** @var array<string, true> functions the header declares */
    private array $functions = [];

    private function __construct(FFI $ffi, string $origin, string $header)
    {
        $this->ffi = $ffi;
        if (preg_match_all('/\b(ck_[a-z0-9_]+)\s*\(/', $header, $m)) {
            $this->functions = array_fill_keys($m[1], true);
        }
        $this->origin = $origin;
        $version = $ffi->ck_abi_version();
        $headerVersion = (int) $ffi->CK_ABI_VERSION;
        if (($version >> 16) !== self::ABI_MAJOR || ((int) $ffi->CK_ABI_MAJOR) !== self::ABI_MAJOR
            || $version < $headerVersion) {
            throw new ClusterkitException(sprintf(
                'clusterkit library %s has ABI %d.%d; these bindings need ABI %d.%d or a later %d.x',
                $origin,
                $version >> 16,
                $version & 0xffff,
                self::ABI_MAJOR,
                $headerVersion & 0xffff,
                self::ABI_MAJOR
            ));
        }
    }

    /**
     * The library, loaded once per path. `$path` null: the preloaded scope if there is one,
     * else CLUSTERKIT_LIB, else libclusterkit.so.1. `$header`: another header file than the
     * shipped resources/clusterkit.h (it must match the library).
     */
    public static function load(?string $path = null, ?string $header = null): self
    {
        $key = ($path ?? '') . "\0" . ($header ?? '');
        if (isset(self::$loaded[$key])) {
            return self::$loaded[$key];
        }
        if (!extension_loaded('ffi')) {
            throw new ClusterkitException('the PHP FFI extension is not loaded (php.ini: extension=ffi)');
        }
        if ($path === null && $header === null) {
            $scoped = self::fromScope();
            if ($scoped !== null) {
                return self::$loaded[$key] = $scoped;
            }
        }
        $env = getenv('CLUSTERKIT_LIB');
        $lib = $path ?? (($env !== false && $env !== '') ? $env : self::DEFAULT_LIB);
        $header ??= self::headerPath();
        $text = @file_get_contents($header);
        if ($text === false) {
            throw new ClusterkitException("cannot read the clusterkit header $header");
        }
        try {
            $ffi = FFI::cdef($text, $lib);
        } catch (\FFI\Exception $e) {
            $hint = ini_get('ffi.enable') === 'preload' && PHP_SAPI !== 'cli'
                ? ' (ffi.enable=preload allows FFI outside the CLI only through preloading: set ffi.preload'
                  . ' to a header made by ' . dirname(__DIR__) . '/bin/clusterkit-ffi-header, or ffi.enable=1)'
                : ' (set CLUSTERKIT_LIB to the absolute path of libclusterkit.so, or preload it)';
            throw new ClusterkitException("cannot load the clusterkit library $lib: {$e->getMessage()}$hint", 0, $e);
        }
        return self::$loaded[$key] = new self($ffi, $lib, $text);
    }

    /** Whether the "clusterkit" FFI scope was preloaded (opcache.preload of preload.php). */
    private static function fromScope(): ?self
    {
        // A scope exists only if a preload script declared one (FFI::load of a header with
        // FFI_SCOPE); under ffi.enable=preload it is the only way to reach the library.
        try {
            $ffi = FFI::scope(self::SCOPE);
        } catch (\FFI\Exception | \Error) {
            return null;
        }
        // The preloaded header is the shipped one (preload.php reads it).
        return new self($ffi, 'scope:' . self::SCOPE, (string) @file_get_contents(self::headerPath()));
    }

    /** Absolute path of the header shipped with the package (PHP variant: `const char *` inputs). */
    public static function headerPath(): string
    {
        return dirname(__DIR__) . '/resources/clusterkit.h';
    }

    /**
     * The header for FFI::load() in an opcache preload script: the shipped header plus
     * `#define FFI_SCOPE "clusterkit"` and `#define FFI_LIB "<lib>"`. `$lib` is an absolute
     * path or a name for the dynamic linker (default: CLUSTERKIT_LIB, else libclusterkit.so.1).
     */
    public static function preloadHeader(?string $lib = null): string
    {
        if ($lib === null) {
            $env = getenv('CLUSTERKIT_LIB');
            $lib = ($env !== false && $env !== '') ? $env : self::DEFAULT_LIB;
        }
        if (str_contains($lib, '"') || str_contains($lib, "\n")) {
            throw new ClusterkitException('library path must not contain quotes or newlines');
        }
        $text = @file_get_contents(self::headerPath());
        if ($text === false) {
            throw new ClusterkitException('cannot read the clusterkit header ' . self::headerPath());
        }
        return '#define FFI_SCOPE "' . self::SCOPE . "\"\n#define FFI_LIB \"$lib\"\n" . $text;
    }

    /**
     * Whether the loaded header declares function `$name` (optional calls added in later
     * minor ABI versions are used only when present).
     */
    public function has(string $name): bool
    {
        return isset($this->functions[$name]);
    }

    /** The library's version string, e.g. "0.1.0". */
    public function version(): string
    {
        // A `const char *` return arrives as a PHP string.
        return (string) $this->ffi->ck_version();
    }

    /** The library's ABI version as "major.minor". */
    public function abiVersion(): string
    {
        $v = $this->ffi->ck_abi_version();
        return ($v >> 16) . '.' . ($v & 0xffff);
    }

    /**
     * The exception for a failed call: the subclass of its status, with ck_last_error() as
     * the message.
     */
    public function error(int $status, string $context = ''): ClusterkitException
    {
        $message = (string) $this->ffi->ck_last_error();
        if ($context !== '') {
            $message = $message === '' ? $context : "$context: $message";
        }
        return ClusterkitException::fromStatus($status, $message);
    }

    /** Copies and frees a library-owned ck_buf; returns its bytes. */
    public function takeBuf(FFI\CData $buf): string
    {
        $ffi = $this->ffi;
        $len = $ffi->ck_buf_len($buf);
        $s = $len === 0 ? '' : FFI::string($ffi->ck_buf_data($buf), $len);
        $ffi->ck_buf_free($buf);
        return $s;
    }

    /** Copies, frees and JSON-decodes a library-owned ck_buf. */
    public function takeJson(FFI\CData $buf): array
    {
        $s = $this->takeBuf($buf);
        $v = json_decode($s, true, 512, JSON_THROW_ON_ERROR);
        return is_array($v) ? $v : [];
    }

    /** Packs strings in the ABI's batch format: each is a 4-byte LE length + its bytes. */
    public static function pack(array $items): string
    {
        $out = '';
        foreach ($items as $s) {
            $out .= pack('V', strlen($s)) . $s;
        }
        return $out;
    }

    /**
     * Unpacks the ABI's batch format; an entry of length 0xFFFFFFFF is absent (null).
     *
     * @return list<?string>
     */
    public static function unpack(string $packed): array
    {
        $out = [];
        $off = 0;
        $end = strlen($packed);
        while ($off < $end) {
            if ($off + 4 > $end) {
                throw new Exception\InternalException('truncated packed list from the library');
            }
            $len = unpack('V', $packed, $off)[1];
            $off += 4;
            if ($len === 0xFFFFFFFF) {
                $out[] = null;
                continue;
            }
            if ($off + $len > $end) {
                throw new Exception\InternalException('truncated packed list from the library');
            }
            $out[] = substr($packed, $off, $len);
            $off += $len;
        }
        return $out;
    }
}
